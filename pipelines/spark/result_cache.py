"""The result cache: results of requests already run, kept across runs, keyed by request.

`<cachePath>/segment=<utc time>-<random>/` holds the results one transform made, written with
Spark's commit protocol: a segment counts once its `_SUCCESS` marker exists (the rule the job's
output shards follow), so a segment an interrupted run left half-written is never read. An
entry's key is a SHA-256 of the cache's scope, the model's identity from its files
(models.fingerprint), and of the request (spark.distinct_requests.REQUEST_COL: its texts and every
setting that decides its result): a changed model or setting misses, it never serves another's results.
Results kept with an error are written (the transform that made them reads them back) but never
served: their requests run again.
"""

from __future__ import annotations

import time
import uuid

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import (
    BooleanType,
    DoubleType,
    StringType,
    StructField,
    StructType,
)

from pipelines.spark.annotation_schema import ANNOTATION_ARRAY_TYPE
from pipelines.spark.distinct_requests import KEY_COL, REQUEST_COL, SECONDS_COL
from pipelines.spark.filesystem import SUCCESS, output_filesystem

SEGMENT_PREFIX = "segment="
RESULT_COL = "result"  # the output annotations, whatever the annotator's outputCol
FAILED_COL = "failed"  # some annotation of the result holds an error

SCHEMA = StructType([
    StructField(KEY_COL, StringType(), False),
    StructField(RESULT_COL, ANNOTATION_ARRAY_TYPE, True),
    StructField(SECONDS_COL, DoubleType(), True),
    StructField(FAILED_COL, BooleanType(), False),
])


class ResultCache:
    """The cache at `path`, for results of the model whose identity is `scope`."""

    def __init__(self, spark: SparkSession, path: str, scope: str):
        self.spark = spark
        self.path = path.rstrip("/")
        self.scope = scope
        self.fs = output_filesystem(spark, self.path)

    def key(self, request: Column) -> Column:
        return F.sha2(F.concat(F.lit(self.scope + "\x00"), request), 256)

    def segments(self) -> list[str]:
        """The committed segments, oldest first."""
        if not self.fs.exists(self.path):
            return []
        names = sorted(n for n in self.fs.list_names(self.path) if n.startswith(SEGMENT_PREFIX))
        return [f"{self.path}/{n}" for n in names if self.fs.exists(f"{self.path}/{n}/{SUCCESS}")]

    def entries(self, output_col: str) -> DataFrame:
        """One served result per key (any one: equal keys hold equal results), as KEY_COL, `output_col`,
        SECONDS_COL."""
        segments = self.segments()
        stored = (self.spark.read.schema(SCHEMA).parquet(*segments) if segments
                  else self.spark.createDataFrame([], SCHEMA))
        kept = stored.where(~F.col(FAILED_COL)).dropDuplicates([KEY_COL])
        return kept.select(KEY_COL, F.col(RESULT_COL).alias(output_col), SECONDS_COL)

    def add(self, made: DataFrame, output_col: str) -> DataFrame:
        """Write `made` (REQUEST_COL, `output_col`, SECONDS_COL) as a new committed segment, now,
        and return it read back (so its requests are not run again by later actions)."""
        self.fs.check_writable(self.path)
        segment = f"{self.path}/{SEGMENT_PREFIX}{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:12]}"
        failed = F.exists(F.col(output_col), lambda a: F.map_contains_key(a["metadata"], F.lit("error")))
        made.select(self.key(F.col(REQUEST_COL)).alias(KEY_COL), F.col(output_col).alias(RESULT_COL), SECONDS_COL,
                    F.coalesce(failed, F.lit(False)).alias(FAILED_COL), REQUEST_COL).write.parquet(segment)
        return self.spark.read.parquet(segment).select(REQUEST_COL, F.col(RESULT_COL).alias(output_col), SECONDS_COL)
