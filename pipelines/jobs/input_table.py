"""Read the input Parquet table and check it has what the job needs, before any model is loaded."""

from __future__ import annotations

import glob
import os

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType

from pipelines.jobs.config import InputSettings


class InputError(ValueError):
    """The input table cannot be used; the message names the path or column and what to do."""


def _is_local(path: str) -> bool:
    return "://" not in path and not path.startswith(("dbfs:", "s3", "gs:", "abfs", "hdfs:"))


def read_input(spark: SparkSession, settings: InputSettings) -> DataFrame:
    path = settings.path
    if _is_local(path):
        local = path[len("file:"):] if path.startswith("file:") else path
        if not (glob.glob(local) if glob.has_magic(local) else os.path.exists(local)):
            raise InputError(f"input.path {path} does not exist; point it at a Parquet file, directory or glob")
    try:
        # mergeSchema reads every file's footer now, so a corrupt file fails here, by name.
        df = spark.read.option("mergeSchema", "true").parquet(path)
    except Exception as e:
        detail = " ".join(str(e).split())[:500]
        raise InputError(
            f"input.path {path} could not be read as Parquet ({detail}). Remove or rewrite the file it names"
        ) from None
    check_columns(df, settings)
    return df


def required_text_columns(settings: InputSettings) -> list[str]:
    if settings.prefix_col is not None:
        return [settings.prefix_col, settings.suffix_col]
    return [settings.text_col]


def check_columns(df: DataFrame, settings: InputSettings) -> None:
    columns = df.columns
    wanted = [("input.id_col", settings.id_col)]
    wanted += [("input.text_col" if c == settings.text_col else "input.prefix_col/suffix_col", c)
               for c in required_text_columns(settings)]
    wanted += [("input.passthrough_cols", c) for c in settings.passthrough_cols]
    wanted += [(f"input.{key}", getattr(settings, key)) for key in ("middle_col", "path_col", "language_col")
               if getattr(settings, key) is not None]
    for key, col in wanted:
        if col not in columns:
            raise InputError(f"{key}: column {col!r} is not in the input; its columns are {columns}")
    for col in required_text_columns(settings):
        data_type = df.schema[col].dataType
        if not isinstance(data_type, StringType):
            raise InputError(
                f"input column {col!r} has type {data_type.simpleString()}, expected string; "
                f"cast it when preparing the table (e.g. CAST({col} AS STRING))"
            )


def count_rows(df: DataFrame, id_col: str) -> int:
    """The input's rows, counted in the same pass that checks their ids: every row needs an id to
    be tracked exactly once, so null ids are refused."""
    totals = df.agg(F.count(F.lit(1)).alias("rows"), F.count(F.col(id_col)).alias("ids")).first()
    nulls = totals["rows"] - totals["ids"]
    if nulls:
        raise InputError(
            f"input column {id_col!r} has {nulls} null ids; every row needs an id "
            "(fill them, e.g. with monotonically_increasing_id(), or drop those rows)"
        )
    return totals["rows"]
