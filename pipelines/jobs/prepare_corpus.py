"""Turn source files into prompt tables for the generation job.

    python jobs/prepare_corpus.py --source-dir src/ --out corpus/ [--glob '*.py'] [--humaneval]
    python jobs/prepare_corpus.py --source-table files.parquet --out corpus/   # columns path, content[, language]

Writes two Parquet tables under --out: `prompts.parquet` (left-to-right completion prompts,
plus HumanEval with --humaneval) and `fim.parquet` (prefix, suffix and the true middle).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from pipelines.prompts.corpus import (
    PromptRow,
    humaneval_rows,
    language_of,
    prompts_from_file,
)

log = logging.getLogger("pipelines.prompts.corpus")

ROW_SCHEMA = StructType([StructField(name, StringType(), name not in ("id", "kind")) for name in PromptRow.__dataclass_fields__])


def read_sources(spark: SparkSession, source_dir: str | None, source_table: str | None, glob: str) -> DataFrame:
    """(path, content, language) rows from a directory of files or a Parquet table of files."""
    if source_dir:
        if not Path(source_dir).exists() and "://" not in source_dir:
            raise FileNotFoundError(f"--source-dir {source_dir} does not exist")
        files = (
            spark.read.format("binaryFile").option("pathGlobFilter", glob).option("recursiveFileLookup", "true")
            .load(source_dir)
        )
        base = str(Path(source_dir).resolve())
        return files.select(
            F.regexp_replace(F.col("path"), r"^file:", "").alias("path"),
            F.decode(F.col("content"), "UTF-8").alias("content"),
        ).withColumn("path", F.regexp_replace("path", "^" + base.replace("\\", "\\\\") + "/?", "")) \
         .withColumn("language", F.lit(None).cast("string"))
    table = spark.read.parquet(source_table)
    missing = [c for c in ("path", "content") if c not in table.columns]
    if missing:
        raise ValueError(f"--source-table {source_table} lacks columns {missing}; its columns are {table.columns}")
    language = F.col("language") if "language" in table.columns else F.lit(None).cast("string")
    return table.select("path", F.col("content").cast("string").alias("content"), language.alias("language"))


def build_prompts(sources: DataFrame, fim_per_file: int, seed: int) -> DataFrame:
    """Prompt rows from (path, content, language) rows; DataFrame API only (no RDD), so that it
    runs on Spark Connect too."""
    columns = ROW_SCHEMA.fieldNames()

    def rows(batches):
        import pandas as pd

        for files in batches:
            out = []
            for path, content, language in zip(files["path"], files["content"], files["language"]):
                if content is None:
                    continue
                language = language or language_of(path)
                out += [r.to_dict() for r in prompts_from_file(path, content, language, fim_per_file, seed)]
            yield pd.DataFrame(out, columns=columns)

    return sources.mapInPandas(rows, ROW_SCHEMA)


def write_tables(prompts: DataFrame, out: str, humaneval: bool) -> dict[str, int]:
    """Write the two tables into `out` (a directory this run owns: the output or its staging)."""
    spark = prompts.sparkSession
    completions = prompts.where(F.col("kind") == "completion")
    if humaneval:
        completions = spark.createDataFrame([r.to_dict() for r in humaneval_rows()], ROW_SCHEMA).unionByName(completions)
    fim = prompts.where(F.col("kind") == "fim")
    counts = {}
    for name, df, columns in (
        ("prompts", completions, ["id", "source", "language", "kind", "prompt", "reference"]),
        ("fim", fim, ["id", "source", "language", "kind", "prefix", "suffix", "middle"]),
    ):
        df = df.select(*columns).orderBy("id").coalesce(1)
        df.write.mode("overwrite").parquet(f"{out.rstrip('/')}/{name}.parquet")
        counts[name] = spark.read.parquet(f"{out.rstrip('/')}/{name}.parquet").count()
    return counts


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--source-dir", help="directory of source files (searched recursively)")
    source.add_argument("--source-table", help="Parquet table with columns path, content[, language]")
    parser.add_argument("--out", required=True, help="directory for prompts.parquet and fim.parquet")
    parser.add_argument("--glob", default="*", help="file name filter for --source-dir, e.g. '*.py' or '{a,b}.py'")
    parser.add_argument("--humaneval", action="store_true", help="add the 164 HumanEval prompts")
    parser.add_argument("--fim-per-file", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--master", default=None, help="Spark master (default: spark-submit's, else local[*])")
    parser.add_argument("--remote", default=None,
                        help="a Spark Connect server (sc://host:port or local[N]); default: $SPARK_REMOTE, else --master")
    args = parser.parse_args(argv)

    from pipelines.jobs.config import SparkSettings
    from pipelines.jobs.output_swap import WholeOutput
    from pipelines.jobs.session import build_session

    inputs = {"--source-dir": args.source_dir, "--source-table": args.source_table}
    try:
        WholeOutput.check(args.out, inputs, "--out")  # before the session: a refused --out fails at once
    except FileExistsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    spark = build_session(SparkSettings(master=args.master, remote=args.remote,
                                        app_name="starcoder-pipelines-prepare-corpus"))
    try:
        output = WholeOutput(spark, args.out, "prepare_corpus", inputs, "--out")
        sources = read_sources(spark, args.source_dir, args.source_table, args.glob)
        counts = write_tables(build_prompts(sources, args.fim_per_file, args.seed), output.path, args.humaneval)
        output.commit()
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        spark.stop()
    print(f"wrote {counts['prompts']} prompts and {counts['fim']} FIM rows to {args.out}")
    return 0

