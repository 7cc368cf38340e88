"""The batch generation job: input table -> DocumentAssembler -> StarCoderTransformer -> sharded Parquet.

`generations(df, config)` is the pure DataFrame -> DataFrame step; `run(spark, config)` adds
input checks, sharded atomic writes, resume and the summary. Every check that can fail does
so before a model is loaded or anything is written.
"""

from __future__ import annotations

import hashlib

from pyspark.ml import Pipeline
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from pipelines.annotators.document_assembler import DocumentAssembler
from pipelines.annotators.starcoder_transformer import StarCoderTransformer
from pipelines.engine.tokenizer import CodeTokenizer
from pipelines.jobs.config import JobConfig
from pipelines.jobs.sharded_job import request_columns, run_model_job, transform_requests
from pipelines.jobs.summary import Summary, summarize
from pipelines.models.families import FimFormat, no_fim_error
from pipelines.models.source import resolve_model
from pipelines.prompts.fim import STARCODER_FIM

DOCUMENT_COL = "document"
GENERATION_COL = "generation"
PROMPT_COL = "_prompt"


def build_pipeline(config: JobConfig, model_path: str | None = None) -> Pipeline:
    g = config.generation
    assembler = DocumentAssembler(
        inputCol=PROMPT_COL, outputCol=DOCUMENT_COL, idCol=config.input.id_col, cleanupMode=config.input.cleanup_mode
    )
    starcoder = StarCoderTransformer(
        inputCols=[DOCUMENT_COL],
        outputCol=GENERATION_COL,
        modelSource=model_path or config.model.source,
        device=config.model.device,
        dtype=config.model.dtype,
        numThreads=config.model.num_threads,
        engine=config.model.engine,
        kvCacheSizeGB=config.model.kv_cache_gb,
        prefixCaching=config.model.prefix_caching,
        memoryCheck=config.model.memory_check,
        workerMemoryGB=config.model.worker_memory_gb,
        maxOutputLength=g.max_output_length,
        minOutputLength=g.min_output_length,
        doSample=g.do_sample,
        temperature=g.temperature,
        topK=g.top_k,
        topP=g.top_p,
        repetitionPenalty=g.repetition_penalty,
        noRepeatNgramSize=g.no_repeat_ngram_size,
        ignoreTokenIds=g.ignore_token_ids,
        stopTokenIds=g.stop_token_ids,
        stopStrings=g.stop_strings,
        stopPreset=g.stop_preset,
        maxInputLength=g.max_input_length,
        nReturnSequences=g.n_return_sequences,
        returnFullText=g.return_full_text,
        outputLogProbs=g.output_logprobs,
        batchSize=g.batch_size,
        maxBatchTokens=g.max_batch_tokens,
        onRowError=config.output.on_error,
        cachePath=config.cache.path or "",
    )
    if g.random_seed is not None:
        starcoder.setRandomSeed(g.random_seed)
    return Pipeline(stages=[assembler, starcoder])


def prompt_column(config: JobConfig, model_path: str | None = None):
    """The prompt: the text column, or a FIM prompt in the model's own format."""
    i = config.input
    if i.prefix_col is not None:
        fim = model_fim_format(model_path or resolve_model(config.model.source).path)
        return fim_prompt_column(i.prefix_col, i.suffix_col, path_col=i.path_col, fim=fim)
    return F.col(i.text_col)


def shard_end_chars(config: JobConfig) -> int | None:
    """Where prompts equal after the cut to maxInputLength share a request (GenerationParams.
    cut_prompt_is_request), rows are sharded by their prompt's last maxInputLength // 4 characters,
    so that such prompts meet in one shard: their last maxInputLength tokens are at least as many
    bytes, at the end of both; otherwise (None) by the whole prompt."""
    params = build_pipeline(config).getStages()[-1].generation_params()
    return max(1, params.max_input_length // 4) if params.cut_prompt_is_request else None


def shard_column(config: JobConfig, model_path: str | None = None):
    """A row's shard key: its prompt, or the prompt's end (shard_end_chars)."""
    end = shard_end_chars(config)
    prompt = prompt_column(config, model_path)
    return prompt if end is None else F.substring(prompt, -end, end)


def with_prompt(df: DataFrame, config: JobConfig, model_path: str | None = None) -> DataFrame:
    return df.withColumn(PROMPT_COL, prompt_column(config, model_path))


def fim_prompt_column(prefix_col: str, suffix_col: str, repo_col: str | None = None, path_col: str | None = None,
                      fim: FimFormat = STARCODER_FIM):
    """`fim_prompt` built by Spark SQL, for a DataFrame with prefix and suffix columns."""
    parts = []
    if repo_col is not None and fim.repo_token:
        parts += [F.lit(fim.repo_token), F.coalesce(F.col(repo_col), F.lit(""))]
    if path_col is not None and fim.file_token:
        parts += [F.lit(fim.file_token), F.coalesce(F.col(path_col), F.lit("")), F.lit("\n")]
    parts += [
        F.lit(fim.prefix_token), F.coalesce(F.col(prefix_col), F.lit("")),
        F.lit(fim.suffix_token), F.coalesce(F.col(suffix_col), F.lit("")),
        F.lit(fim.middle_token),
    ]
    return F.concat(*parts)


def model_fim_format(model_path: str):
    """The model's FIM format; a model whose vocabulary has none fails here, on the driver."""
    fim = CodeTokenizer.for_model(model_path).fim
    if fim is None:
        raise no_fim_error(model_path)
    return fim


def fim_scores(middle_col: str):
    """Exact match and edit similarity (1 - Levenshtein / longer length) of generated vs true middle."""
    generated, truth = F.col("completion"), F.col(middle_col)
    longest = F.greatest(F.char_length(generated), F.char_length(truth))
    return [
        (generated == truth).alias("exact_match"),
        F.when(longest == 0, F.lit(1.0))
        .otherwise(1 - F.levenshtein(generated, truth) / longest).alias("edit_similarity"),
    ]


def generations(df: DataFrame, config: JobConfig, model_path: str | None = None) -> DataFrame:
    """Generate for every row (each distinct request once); keep id and passthrough columns, add
    annotations, flat metrics and the request columns."""
    prompted = with_prompt(df, config, model_path)
    generated = transform_requests(build_pipeline(config, model_path), prompted, config)
    first = F.col(GENERATION_COL)[0]
    meta = first["metadata"]
    prompt_text = F.col(DOCUMENT_COL)[0]["result"]
    completion = (
        F.expr(f"substring({GENERATION_COL}[0].result, char_length({DOCUMENT_COL}[0].result) + 1)")
        if config.generation.return_full_text and config.input.prefix_col is None  # FIM results are middles
        else first["result"]
    )
    i = config.input
    keep = [i.id_col] + [c for c in [*i.passthrough_cols, i.middle_col, i.language_col] if c and c != i.id_col]
    keep = list(dict.fromkeys(keep))
    out = generated.select(
        *keep,
        GENERATION_COL,
        F.when(prompt_text.isNotNull(), completion).alias("completion"),
        meta["prompt_tokens"].cast("int").alias("prompt_tokens"),
        F.aggregate(
            F.col(GENERATION_COL), F.lit(0), lambda acc, a: acc + a["metadata"]["completion_tokens"].cast("int")
        ).alias("completion_tokens"),
        meta["finish_reason"].alias("finish_reason"),
        (meta["truncated"] == "true").alias("truncated"),
        meta["error"].alias("error"),
        *([meta["logprob"].cast("double").alias("logprob"),
           F.when(~F.isnan(meta["mean_logprob"].cast("double")), meta["mean_logprob"].cast("double"))
           .alias("mean_logprob")] if config.generation.output_logprobs else []),
        *request_columns(),
    )
    return out.select("*", *fim_scores(i.middle_col)) if i.middle_col else out


def manifest(config: JobConfig, model_path: str) -> dict:
    """What must not change between a run and its resume."""
    settings = {k: v for k, v in config.generation.__dict__.items() if k not in ("batch_size", "max_batch_tokens")}
    fingerprint = hashlib.sha256(repr(sorted(settings.items())).encode()).hexdigest()[:16]
    end = shard_end_chars(config)
    return {
        "input": config.input.path,
        "id_col": config.input.id_col,
        "model": model_path,
        "generation": fingerprint,
        "shard_key": "prompt" if end is None else f"prompt's last {end} characters",
    }


def run(spark: SparkSession, config: JobConfig) -> Summary:
    return run_model_job(spark, config, build_pipeline=build_pipeline, manifest=manifest, transform=generations,
                         summarize=summarize, shard_key=shard_column)


def main(argv=None) -> int:
    from pipelines.jobs.cli import main_for

    return main_for(run, "Batch code generation with StarCoder2 on Spark", argv)
