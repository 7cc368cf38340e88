"""The part every batch job shares: transform the input shard by shard, commit each shard on its
own, check that every input row came out once, and mark the output complete.

A job supplies the DataFrame -> DataFrame step and the manifest that must not change between a
run and its resume; the shards, resume, worker-failure messages and the final row count check
are the same for generation and scoring.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

from pyspark.sql import DataFrame, SparkSession

from pipelines.config import JobConfig
from pipelines.input_table import check_ids, read_input
from pipelines.model_source import resolve_model
from pipelines.sharded_output import ShardedOutput, shard_of
from pipelines.spark_session import default_parallelism, session_master
from pipelines.spark.worker_failures import WorkerCrashError, check_worker_python, explain_failure

log = logging.getLogger("pipelines.job")


@dataclass
class ShardedRun:
    output: ShardedOutput
    written: DataFrame  # the whole committed output
    rows_in: int
    shards_written: list[int]  # by this run
    model_seconds: float  # time spent transforming and writing the shards of this run


def run_in_shards(spark: SparkSession, config: JobConfig, df: DataFrame, manifest: dict, memory_plan: str,
                  transform: Callable[[DataFrame], DataFrame]) -> ShardedRun:
    """Write `transform(rows of shard s)` for every shard not yet committed, then commit the output."""
    output = ShardedOutput(spark, config.output.path, config.output.shards, config.output.mode, manifest)
    pending = output.prepare()
    output.start()
    log.info("output %s: %d of %d shards to write", config.output.path, len(pending), config.output.shards)

    parts = config.output.partitions_per_shard or default_parallelism(spark)
    started = time.time()
    for n, shard in enumerate(pending, 1):
        shard_rows = df.where(shard_of(config.input.id_col, config.output.shards) == shard)
        shard_out = transform(shard_rows.repartition(parts))
        try:
            output.write_shard(shard_out, shard)
        except Exception as e:
            explained = explain_failure(e, memory_plan)
            if explained is None:
                raise
            raise WorkerCrashError(
                f"shard {shard} was not written: {explained}. Shards committed so far are kept: "
                "rerun with output.mode=resume"
            ) from e
        log.info("shard %d committed (%d/%d this run)", shard, n, len(pending))
    model_seconds = time.time() - started

    written = output.read()
    rows_in = df.count()
    rows_out = written.count()
    if rows_out != rows_in:
        raise RuntimeError(
            f"output {config.output.path} has {rows_out} rows for {rows_in} input rows; it was not marked "
            "complete. Rerun with output.mode=resume or overwrite"
        )
    output.commit()
    return ShardedRun(output, written, rows_in, pending, model_seconds)


def run_model_job(spark: SparkSession, config: JobConfig, *, build_pipeline, manifest, transform, summarize):
    """A batch job that runs a model over the input table, shard by shard: read and check the
    input, resolve the model, check the model stage's settings and memory plan and the workers'
    Python before anything is written, run the shards, then summarize the committed output
    into `_summary.json`. Returns the summary."""
    started = time.time()
    df = read_input(spark, config.input)
    check_ids(df, config.input.id_col)
    model_path = resolve_model(config.model.source, config.model.dtype).path
    # Before anything is written: the model stage accepts its settings, and the model fits the
    # workers' memory (or memory_check: warn).
    plan = build_pipeline(config, model_path).getStages()[-1].check_memory(spark)
    check_worker_python(spark)
    done = run_in_shards(spark, config, df, manifest(config, model_path), plan.describe() if plan is not None else "",
                         lambda shard_rows: transform(shard_rows, config, model_path))
    summary = summarize(
        done.written, config, rows_in=done.rows_in, shards_written=done.shards_written,
        model_seconds=done.model_seconds, seconds=time.time() - started, master=session_master(spark),
        model_path=model_path,
    )
    summary.write(done.output.fs, f"{done.output.path}/_summary.json")
    return summary
