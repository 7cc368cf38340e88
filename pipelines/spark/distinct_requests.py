"""Each distinct request runs once: rows whose request is the same share one result.

A row's request is what decides its result: the texts of its input annotations (the prompt after
the DocumentAssembler's cleanup and FIM formatting) and the settings fingerprint the annotator
gives (every generation or scoring setting, the engine, dtype and device; a result cache adds the
model's identity to its own keys). Sampled rows share too: a sample's seed is derived from the run's
seed, the prompt text and the sample number (engine.sequence_seed), so equal requests draw the
same tokens whether they run once or twice.

The distinct requests run with their annotations' metadata reduced to the row id (for error
messages); each row then gets the shared result with its own metadata back (the row's input
metadata, overridden by the keys the model stage sets, as when every row runs on its own).
Nothing here knows tensors or engines: `run` is the model stage's own partition mapper.
"""

from __future__ import annotations

from typing import Callable

import pandas as pd  # (module-level: pandas_udf reads the type hints)
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from pipelines.spark.annotation_schema import ANNOTATION_ARRAY_TYPE

KEY_COL = "key"  # a result cache's key column (spark.result_cache)

REQUEST_COL = "_request"  # sha256 hex of the settings fingerprint and the row's texts
SECONDS_COL = "_request_seconds"  # the model time of the row's request, in the run that made it
CACHED_COL = "_cached"  # the result came from the result cache
ID_KEY = "id"  # the only metadata a request carries to the model stage: for its error messages
CACHED_KEY = "cached"  # set in every output annotation's metadata: "true" | "false"
_PARTITION, _POSITION = "_input_partition", "_input_position"  # where a row was, to put it back


def _annotations(col: str) -> Column:
    return F.coalesce(F.col(col), F.array().cast(ANNOTATION_ARRAY_TYPE))


def _texts(input_cols: list[str]) -> Column:
    return F.concat(*[F.transform(_annotations(c), lambda a: F.coalesce(a["result"], F.lit(""))) for c in input_cols])


def _request_texts(texts: Column, cut) -> Column:
    """`cut` over each row's texts, in the Python workers (it tokenises)."""
    from pyspark.sql.functions import pandas_udf

    @pandas_udf("array<string>")
    def request_texts(rows: pd.Series) -> pd.Series:
        return pd.Series([cut(list(row)) for row in rows])

    return request_texts(texts)


def _key(settings: str, texts: Column) -> Column:
    # JSON keeps texts and their boundaries apart
    return F.sha2(F.to_json(F.struct(F.lit(settings).alias("settings"), texts.alias("texts"))), 256)


def with_request_key(df: DataFrame, input_cols: list[str], settings: str, cut=None) -> DataFrame:
    """`df` with REQUEST_COL, the row's request as a hex SHA-256. `cut` (texts -> key texts) keys
    each text by what the model runs of it, in the Python workers: a stage over every row, 0.4 to
    0.7 s more per job on a small table (splitting off the rows with a text long enough to be cut
    cost more: a second scan of the input)."""
    texts = _texts(input_cols)
    return df.withColumn(REQUEST_COL, _key(settings, texts if cut is None else _request_texts(texts, cut)))


def _id_only(col: str) -> Column:
    return F.transform(_annotations(col), lambda a: a.withField(
        "metadata", F.map_filter(a["metadata"], lambda k, v: k == F.lit(ID_KEY))))


def with_own_metadata(output_col: str, input_cols: list[str], per_text: int) -> Column:
    """The shared output annotations with the row's own metadata: output annotation i comes from
    input annotation i // per_text, whose metadata it keeps where the model stage set no key of
    its own; `cached` says where the result came from."""
    sources = F.concat(*[_annotations(c) for c in input_cols])
    cached = F.create_map(F.lit(CACHED_KEY), F.when(F.col(CACHED_COL), F.lit("true")).otherwise(F.lit("false")))

    def own(a, i):
        made = F.map_filter(a["metadata"], lambda k, v: (k != F.lit(ID_KEY)) & (k != F.lit(CACHED_KEY)))
        source = F.element_at(sources, F.floor(i / per_text).cast("int") + 1)["metadata"]
        kept = F.map_filter(F.coalesce(source, F.create_map().cast("map<string,string>")),
                            lambda k, v: ~F.array_contains(F.map_keys(made), k) & (k != F.lit(CACHED_KEY)))
        return a.withField("metadata", F.map_concat(kept, made, cached))

    return F.transform(F.col(output_col), own)


def run_distinct(dataset: DataFrame, *, input_cols: list[str], output_col: str, per_text: int, settings: str,
                 partitions: int, run: Callable[[DataFrame], DataFrame], cache=None, keep_request_cols: bool = False,
                 keep_order: bool = True, column_metadata: dict | None = None, rows_per_partition: int = 1,
                 cut: Callable[[list[str]], list[str]] | None = None) -> DataFrame:
    """`dataset` with `output_col` from `run` (a DataFrame -> DataFrame adding `output_col` and
    SECONDS_COL), where `run` sees each distinct request once, spread over `partitions`
    partitions. `cache` (a result_cache.ResultCache) serves requests it holds and keeps the new
    ones, run in at most one partition per `rows_per_partition` of them. `keep_request_cols`:
    also return REQUEST_COL, SECONDS_COL and CACHED_COL. `keep_order`: rows come back in their
    input partitions' order (as a row-by-row stage gives them; costs one more shuffle of the rows).
    `cut`: see with_request_key."""
    keyed = dataset.drop(output_col)
    if keep_order:
        keyed = keyed.withColumn(_PARTITION, F.spark_partition_id()).withColumn(_POSITION, F.monotonically_increasing_id())
    keyed = with_request_key(keyed, input_cols, settings, cut)
    requests = keyed.select(REQUEST_COL, *[_id_only(c).alias(c) for c in input_cols]).dropDuplicates([REQUEST_COL])
    kept, results, run_partitions = None, None, max(partitions, 1)
    if cache is not None:
        kept = cache.entries(output_col)  # listed once: hits and misses see the same entries
        requests = requests.join(kept.select(F.col(KEY_COL).alias("_key")),
                                 cache.key(F.col(REQUEST_COL)) == F.col("_key"), "left_anti")
        # A run over a grown table has few new requests: no more partitions than they fill (each
        # loads the model on its worker), and none at all when the cache holds every request.
        missing = requests.count()
        run_partitions = min(run_partitions, -(-missing // max(rows_per_partition, 1)))
    if run_partitions > 0:
        made = run(requests.repartition(run_partitions)).select(REQUEST_COL, output_col, SECONDS_COL)
        if cache is not None:
            made = cache.add(made, output_col)  # written and committed now; read back from there
        results = made.withColumn(CACHED_COL, F.lit(False))
    if kept is not None:
        wanted = keyed.select(REQUEST_COL).distinct().withColumn(KEY_COL, cache.key(F.col(REQUEST_COL)))
        hits = kept.join(wanted, KEY_COL).select(REQUEST_COL, output_col, SECONDS_COL).withColumn(CACHED_COL, F.lit(True))
        results = hits if results is None else results.unionByName(hits)
    joined = keyed.join(results, REQUEST_COL, "left")
    if keep_order:
        # Each input partition's rows back together, in their order (partitions may share one).
        joined = joined.repartition(max(partitions, 1), _PARTITION).sortWithinPartitions(_POSITION)
    columns = [c for c in dataset.columns if c != output_col]
    out = joined.select(*columns, with_own_metadata(output_col, input_cols, per_text)
                        .alias(output_col, metadata=column_metadata or {}), REQUEST_COL, SECONDS_COL, CACHED_COL)
    return out if keep_request_cols else out.drop(REQUEST_COL, SECONDS_COL, CACHED_COL)
