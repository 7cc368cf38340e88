"""The batch scoring job: input table -> DocumentAssembler -> StarCoderScorer -> sharded Parquet.

`scores(df, config)` is the pure DataFrame -> DataFrame step; `run(spark, config)` adds input
checks, the sharded commits and resume of the generation job, and the scoring summary. The
`input`, `model`, `scoring` and `output` sections of the config apply; `generation` does not.
"""

from __future__ import annotations

import hashlib

from pyspark.ml import Pipeline
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from pipelines.annotators.document_assembler import DocumentAssembler
from pipelines.annotators.starcoder_scorer import StarCoderScorer
from pipelines.jobs.config import ConfigError, JobConfig
from pipelines.jobs.sharded_job import request_columns, run_model_job, transform_requests
from pipelines.jobs.summary import ScoringSummary, summarize_scores

DOCUMENT_COL = "document"
SCORE_COL = "score"
# Columns the job adds to the id and passthrough columns.
SCORE_COLUMNS = ("perplexity", "mean_logprob", "logprob", "tokens", "windows", "error")


def build_pipeline(config: JobConfig, model_path: str | None = None) -> Pipeline:
    s, m = config.scoring, config.model
    assembler = DocumentAssembler(
        inputCol=config.input.text_col, outputCol=DOCUMENT_COL, idCol=config.input.id_col,
        cleanupMode=config.input.cleanup_mode,
    )
    scorer = StarCoderScorer(
        inputCols=[DOCUMENT_COL],
        outputCol=SCORE_COL,
        modelSource=model_path or m.source,
        device=m.device,
        dtype=m.dtype,
        numThreads=m.num_threads,
        engine=m.engine,
        kvCacheSizeGB=m.kv_cache_gb,
        prefixCaching=m.prefix_caching,
        memoryCheck=m.memory_check,
        workerMemoryGB=m.worker_memory_gb,
        maxInputLength=s.max_input_length,
        stride=s.stride,
        batchSize=s.batch_size,
        maxBatchTokens=s.max_batch_tokens,
        onRowError=config.output.on_error,
        cachePath=config.cache.path or "",
    )
    return Pipeline(stages=[assembler, scorer])


def defined(value):
    """NaN (a document with nothing to predict, or an error) as null, so that aggregates skip it."""
    return F.when(~F.isnan(value), value)


def scores(df: DataFrame, config: JobConfig, model_path: str | None = None) -> DataFrame:
    """Score every row (each distinct document once); keep id and passthrough columns, add the flat
    score columns and the request columns."""
    scored = transform_requests(build_pipeline(config, model_path), df, config)
    meta = F.col(SCORE_COL)[0]["metadata"]
    i = config.input
    keep = list(dict.fromkeys([i.id_col, *i.passthrough_cols]))
    return scored.select(
        *keep,
        defined(meta["perplexity"].cast("double")).alias("perplexity"),
        defined(meta["mean_logprob"].cast("double")).alias("mean_logprob"),
        meta["logprob"].cast("double").alias("logprob"),
        meta["tokens"].cast("int").alias("tokens"),
        meta["windows"].cast("int").alias("windows"),
        meta["error"].alias("error"),
        *request_columns(),
    )


def manifest(config: JobConfig, model_path: str) -> dict:
    """What must not change between a run and its resume (batch settings may)."""
    settings = {"max_input_length": config.scoring.max_input_length, "stride": config.scoring.params().window_stride}
    fingerprint = hashlib.sha256(repr(sorted(settings.items())).encode()).hexdigest()[:16]
    return {
        "job": "score",  # a generation output is never resumed as a scoring one, nor the reverse
        "input": config.input.path,
        "id_col": config.input.id_col,
        "model": model_path,
        "dtype": config.model.dtype,
        "scoring": fingerprint,
        "shard_key": "text",
    }


def check_scoring_input(config: JobConfig) -> None:
    if config.input.prefix_col is not None:
        raise ConfigError(
            "input.prefix_col/suffix_col build fill-in-the-middle prompts for generation; the scoring job scores "
            "the text of input.text_col: unset them (or build the text column you want scored first)"
        )


def run(spark: SparkSession, config: JobConfig) -> ScoringSummary:
    check_scoring_input(config)
    return run_model_job(spark, config, build_pipeline=build_pipeline, manifest=manifest, transform=scores,
                         summarize=summarize_scores, shard_key=lambda c, _: F.col(c.input.text_col))


def main(argv=None) -> int:
    from pipelines.jobs.cli import main_for

    return main_for(run, "Perplexity of every document of a corpus with StarCoder2 on Spark", argv)
