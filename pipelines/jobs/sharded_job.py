"""The part every batch job shares: transform the input shard by shard, commit each shard on its
own, check that every input row came out once (the summary's row count against the input's), and
mark the output complete (output.mode retry_errors: transform again only the rows kept with an
error, shard by shard).

A job supplies the DataFrame -> DataFrame step and the manifest that must not change between a
run and its resume; the shards, resume, worker-failure messages and the final row count check
are the same for generation and scoring.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from pipelines.jobs.config import ConfigError, JobConfig
from pipelines.jobs.input_table import count_rows, read_input
from pipelines.jobs.output_guard import check_apart
from pipelines.jobs.sharded_output import ShardedOutput, shard_of
from pipelines.models.locations import to_local_path
from pipelines.models.source import resolve_model
from pipelines.spark.cluster import default_parallelism, session_master
from pipelines.spark.distinct_requests import CACHED_COL, REQUEST_COL, SECONDS_COL
from pipelines.spark.filesystem import io_failure
from pipelines.spark.worker_failures import (
    WorkerCrashError,
    check_worker_python,
    explain_failure,
)

log = logging.getLogger("pipelines.job")


@dataclass
class ShardedRun:
    output: ShardedOutput
    written: DataFrame  # the whole output, read before it is committed
    shards_written: list[int]  # by this run
    model_seconds: float  # time spent transforming and writing the shards of this run


def retry_split(output: ShardedOutput, id_col: str, shard: int, rows: DataFrame) -> tuple[DataFrame, DataFrame]:
    """output.mode=retry_errors: of a shard's input `rows`, those to run again (every row of an id
    with a failed row in the shard, so duplicate ids stay whole), and the shard's other rows, kept
    as they are."""
    previous = output.read_shard(shard)
    failed_ids = previous.where(F.col("error").isNotNull()).select(id_col).distinct()
    return rows.join(failed_ids, id_col, "left_semi"), previous.join(failed_ids, id_col, "left_anti")


def run_in_shards(spark: SparkSession, config: JobConfig, df: DataFrame, output: ShardedOutput, memory_plan: str,
                  transform: Callable[[DataFrame], DataFrame], shard_key: Column) -> ShardedRun:
    """Write `transform(rows of shard s)` for every shard still to write. The caller checks the
    output's row count and commits it (after writing its summary into it)."""
    pending = output.prepare()
    output.start()
    log.info("output %s: %d of %d shards to write", config.output.path, len(pending), config.output.shards)

    id_col = config.input.id_col
    started = time.time()
    for n, shard in enumerate(pending, 1):
        rows, kept = df.where(shard_of(shard_key, output.shards) == shard), None
        if output.mode == "retry_errors":
            rows, kept = retry_split(output, id_col, shard, rows)
        shard_out = transform(rows)  # its distinct requests are spread over shard_partitions()
        try:
            output.write_shard(shard_out if kept is None else kept.unionByName(shard_out), shard)
        except Exception as e:
            explained, disk = explain_failure(e, memory_plan), io_failure(e)
            if explained is None and disk is not None:
                explained = f"writing to {output.target} failed: {disk}"
            if explained is None:
                raise
            raise WorkerCrashError(
                f"shard {shard} was not written: {explained}. Shards committed so far are kept: "
                "once the cause is fixed, rerun with output.mode=resume"
            ) from None
        log.info("shard %d committed (%d/%d this run)", shard, n, len(pending))
    model_seconds = time.time() - started
    return ShardedRun(output, output.read(), pending, model_seconds)


def job_model(spark: SparkSession, config: JobConfig) -> str:
    """The model the job runs: model.source resolved, or its OpenVINO export (model.export), made
    here on the driver the first time and kept under model.export_dir by the model's fingerprint."""
    model_path = resolve_model(config.model.source, config.model.dtype).path
    m = config.model
    if not m.export:
        return model_path
    from pipelines.engine.backends import exports_unavailable
    from pipelines.models.openvino_export import cached_export
    from pipelines.models.source import model_forms

    unavailable = exports_unavailable()
    if unavailable:
        raise ConfigError(f"model.export: {m.export} runs on the openvino engine, but {unavailable}")
    if "safetensors" not in model_forms(model_path):
        raise ConfigError(f"model.export: {m.export} exports a Hugging Face directory with safetensors weights; "
                          f"{config.model.source} has none (an export or a GGUF file runs as it is: unset model.export)")
    if not m.export_dir and not session_master(spark).startswith("local"):
        raise ConfigError(f"model.export: on a cluster ({session_master(spark)}) set model.export_dir to a directory "
                          "every worker reads (a volume, /dbfs/..., a shared mount): the export is made there once")
    return cached_export(model_path, m.export, to_local_path(m.export_dir) if m.export_dir else None)


# Per output row: the request it shares with equal rows, whether its result came from the result
# cache, and the model time of its request in the run that made it (spark.distinct_requests).
REQUEST_COLUMNS = {REQUEST_COL: "request", CACHED_COL: "cached", SECONDS_COL: "request_seconds"}


def shard_partitions(spark: SparkSession, config: JobConfig) -> int:
    """Partitions a shard's requests run in: output.partitions_per_shard, else Spark's default parallelism."""
    return config.output.partitions_per_shard or default_parallelism(spark)


def transform_requests(pipeline, df: DataFrame, config: JobConfig) -> DataFrame:
    """The pipeline's stages over a shard's rows `df`, the model stage (the last) with its request columns."""
    *before, model_stage = pipeline.getStages()
    for stage in before:
        df = stage.transform(df)
    # A shard's rows are written in no particular order: no shuffle to keep it.
    return model_stage.transform_requests(df, keep_request_cols=True, keep_order=False,
                                          partitions=shard_partitions(df.sparkSession, config))


def request_columns() -> list[Column]:
    return [F.col(internal).alias(name) for internal, name in REQUEST_COLUMNS.items()]


def run_model_job(spark: SparkSession, config: JobConfig, *, build_pipeline, manifest, transform, summarize,
                  shard_key: Callable[[JobConfig, str], Column]):
    """A batch job that runs a model over the input table, shard by shard: check that the output
    path is apart from the input, read and check the input, resolve the model, check the model
    stage's settings and memory plan and the workers' Python before anything is written, run the
    shards, write the summary into the output (`_summary.json`), then commit it. Returns the summary."""
    started = time.time()
    check_apart(config.output.path, {"input.path": config.input.path})
    if config.cache.path:
        check_apart(config.cache.path, {"input.path": config.input.path, "output.path": config.output.path},
                    output_key="cache.path")
    df = read_input(spark, config.input)
    rows_in = count_rows(df, config.input.id_col)
    model_path = job_model(spark, config)
    # Before anything is written: the model stage accepts its settings, and the model fits the
    # workers' memory (or memory_check: warn).
    plan = build_pipeline(config, model_path).getStages()[-1].check_memory(spark)
    check_worker_python(spark)
    output = ShardedOutput(spark, config.output.path, config.output.shards, config.output.mode,
                           manifest(config, model_path))
    done = run_in_shards(spark, config, df, output, plan.describe() if plan is not None else "",
                         lambda shard_rows: transform(shard_rows, config, model_path), shard_key(config, model_path))
    summary = summarize(
        done.written, config, rows_in=rows_in, shards_written=done.shards_written,
        model_seconds=done.model_seconds, seconds=time.time() - started, master=session_master(spark),
        model_path=model_path,
    )
    if summary.rows_out != rows_in:
        raise RuntimeError(
            f"output {config.output.path} has {summary.rows_out} rows for {rows_in} input rows; it was not marked "
            "complete. Rerun with output.mode=resume or overwrite"
        )
    output.write_summary(summary.to_json() + "\n")
    output.commit()
    return summary
