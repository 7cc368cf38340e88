"""Output written in shards, each committed on its own, so a run can be resumed.

Every input row belongs to exactly one shard, chosen from a hash of its request text (the prompt,
or the document scored), so that equal requests meet in one shard and run once. A shard is
written with Spark's commit protocol into `<output>/shard=NNNNN/` and counts as done once
its `_SUCCESS` marker exists. The whole output is complete only when `<output>/_SUCCESS`
exists, written after every shard is done and the row counts agree. A manifest,
`<output>/_job.json`, records how rows were sharded so that a resume splits them the same way.
"""

from __future__ import annotations

import json

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from pipelines.jobs.output_guard import MANIFEST, OutputRefusedError, check_replaceable
from pipelines.jobs.output_swap import ReplaceableOutput
from pipelines.spark.filesystem import (
    SUCCESS,
    failure_reason,
    io_failure,
    output_filesystem,
)

SHARD_COL = "shard"
RETRY_DIR = "_retry"  # a retried shard is written here, then swapped in


class OutputExistsError(OutputRefusedError):
    pass


class OutputWriteError(RuntimeError):
    """Writing the output failed (a full disk, a write error); the message names the path and the cause."""


def shard_of(key: Column, shards: int) -> Column:
    """The shard of a row: a stable hash of its shard key (as a string, so its type does not matter)."""
    return F.pmod(F.xxhash64(F.coalesce(key.cast("string"), F.lit(""))), F.lit(shards)).cast("int")


class ShardedOutput:
    def __init__(self, spark: SparkSession, path: str, shards: int, mode: str, manifest: dict):
        self.spark = spark
        self.target = path.rstrip("/")
        self.path = self.target  # where this run writes: the output, or its staging directory
        self.shards = shards
        self.mode = mode
        self.manifest = {**manifest, "shards": shards}
        self.fs = output_filesystem(spark, self.target)
        self.replaceable = ReplaceableOutput(self.fs, self.target)

    def shard_path(self, shard: int, root: str | None = None) -> str:
        return f"{root or self.path}/{SHARD_COL}={shard:05d}"

    def prepare(self) -> list[int]:
        """Check the output path for the mode; return the shards still to write. No data is written."""
        self.replaceable.recover()
        self._recover_retry()
        exists = self.replaceable.holds_output(self.target)
        if self.mode == "error" and exists:
            raise OutputExistsError(
                f"output path {self.target} already exists; choose another output.path, or set "
                "output.mode=overwrite to replace an earlier output of this job or output.mode=resume to finish "
                "an interrupted run"
            )
        if self.mode == "resume":
            if self.replaceable.staging_started():
                self.path = self.replaceable.staging  # an overwrite that stopped before its swap
            elif not exists:
                return list(range(self.shards))
            self._check_manifest()
            if self.fs.exists(f"{self.path}/{SUCCESS}"):
                return []
            return [s for s in range(self.shards) if not self.fs.exists(f"{self.shard_path(s)}/{SUCCESS}")]
        if self.mode == "retry_errors":
            return self._shards_with_errors()
        if self.mode == "overwrite":
            self.replaceable.discard_staging()
            if exists:
                check_replaceable(self.fs, self.target)
                self.path = self.replaceable.staging
        return list(range(self.shards))

    def start(self) -> None:
        self.fs.check_writable(self.path)
        if not self.fs.exists(f"{self.path}/{MANIFEST}"):
            self._write_marker(MANIFEST, json.dumps(self.manifest, indent=2, sort_keys=True))
        if self.mode == "retry_errors":
            self.fs.delete(f"{self.path}/{SUCCESS}")  # incomplete until every retried shard is back

    def _check_manifest(self) -> None:
        manifest_path = f"{self.path}/{MANIFEST}"
        if not self.fs.exists(manifest_path):
            raise OutputExistsError(
                f"output path {self.path} exists but was not written by this job (no {MANIFEST}); "
                f"it cannot be resumed or retried. Use another output.path"
            )
        previous = json.loads(self.fs.read_text(manifest_path))
        for key in sorted(set(previous) | set(self.manifest)):
            if previous.get(key) != self.manifest.get(key):
                raise OutputExistsError(
                    f"cannot {self.mode.replace('_', ' ')} {self.path}: {key} was {previous.get(key)!r} and is now "
                    f"{self.manifest.get(key)!r}. Run it with the same input, model, generation settings and "
                    "output.shards, or start again with output.mode=overwrite"
                )

    def _shards_with_errors(self) -> list[int]:
        """retry_errors: the committed output's shards that hold rows kept with an error."""
        if self.replaceable.staging_started():
            raise OutputExistsError(
                f"an overwrite of {self.target} was interrupted: finish it with output.mode=resume, then retry "
                "its failed rows with output.mode=retry_errors"
            )
        if not self.replaceable.holds_output(self.target):
            raise OutputExistsError(
                f"output.mode=retry_errors regenerates the failed rows of a finished output, and {self.target} "
                "holds no output: run the job with output.mode=error or overwrite first"
            )
        self._check_manifest()
        unfinished = [s for s in range(self.shards) if not self.fs.exists(f"{self.shard_path(s)}/{SUCCESS}")]
        if unfinished:
            raise OutputExistsError(
                f"output {self.target} has {len(unfinished)} unfinished shards ({unfinished[:5]}): finish it with "
                "output.mode=resume, then retry its failed rows"
            )
        written = self.read()
        if "error" not in written.columns:
            raise OutputExistsError(f"output {self.target} has no error column: there are no failed rows to retry")
        failed = written.where(F.col("error").isNotNull()).select(SHARD_COL).distinct().collect()
        return sorted(r[SHARD_COL] for r in failed)

    def read_shard(self, shard: int) -> DataFrame:
        return self.spark.read.parquet(self.shard_path(shard))

    def write_shard(self, df: DataFrame, shard: int) -> None:
        if self.mode == "retry_errors":
            self._replace_shard(df, shard)
        else:
            # Overwrite: a shard left half-written by a killed run is replaced as a whole.
            df.write.mode("overwrite").parquet(self.shard_path(shard))

    def _replace_shard(self, df: DataFrame, shard: int) -> None:
        """Write a shard beside the one it replaces (which `df` may be reading), then swap them."""
        retry, replaced = self.shard_path(shard, f"{self.path}/{RETRY_DIR}"), f"{self.path}/{RETRY_DIR}/replaced-{shard:05d}"
        df.write.mode("overwrite").parquet(retry)
        self.fs.rename(self.shard_path(shard), replaced)
        self.fs.rename(retry, self.shard_path(shard))
        self.fs.delete(replaced)

    def _recover_retry(self) -> None:
        """Put back a shard whose swap a crash interrupted, and drop the retry's scratch space."""
        scratch = f"{self.target}/{RETRY_DIR}"
        if not self.fs.exists(scratch):
            return
        for name in self.fs.list_names(scratch):
            if name.startswith("replaced-") and not self.fs.exists(self.shard_path(int(name[9:]), self.target)):
                self.fs.rename(f"{scratch}/{name}", self.shard_path(int(name[9:]), self.target))
        self.fs.delete(scratch)

    def commit(self) -> None:
        """Mark the output complete; an overwrite's staging directory takes the old output's place."""
        if self.mode == "retry_errors" and self.fs.exists(f"{self.path}/{RETRY_DIR}"):
            self.fs.delete(f"{self.path}/{RETRY_DIR}")
        self._write_marker(SUCCESS, "")
        if self.path != self.target:
            self.replaceable.swap()
            self.path = self.target

    def write_summary(self, text: str) -> None:
        self._write_marker("_summary.json", text)

    def _write_marker(self, name: str, text: str) -> None:
        try:
            self.fs.write_text(f"{self.path}/{name}", text)
        except Exception as e:  # pyarrow's OSError, or Py4J's wrapper of the Java IOException
            raise OutputWriteError(
                f"could not write {self.path}/{name}: {io_failure(e) or failure_reason(e)[:300]}. Shards committed "
                "so far are kept: once the cause is fixed (free space, permissions), rerun with output.mode=resume"
            ) from None

    def read(self) -> DataFrame:
        return self.spark.read.parquet(self.path)
