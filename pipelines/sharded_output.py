"""Output written in shards, each committed on its own, so a run can be resumed.

Every input row belongs to exactly one shard, chosen from a hash of its id. A shard is
written with Spark's commit protocol into `<output>/shard=NNNNN/` and counts as done once
its `_SUCCESS` marker exists. The whole output is complete only when `<output>/_SUCCESS`
exists, written after every shard is done and the row counts agree. A manifest,
`<output>/_job.json`, records how rows were sharded so that a resume splits them the same way.
"""

from __future__ import annotations

import json

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from pipelines.filesystem import output_filesystem

SHARD_COL = "shard"
MANIFEST = "_job.json"
SUCCESS = "_SUCCESS"


class OutputExistsError(FileExistsError):
    pass


def shard_of(id_col: str, shards: int) -> Column:
    """The shard of a row: a stable hash of its id (as a string, so the id's type does not matter)."""
    return F.pmod(F.xxhash64(F.col(id_col).cast("string")), F.lit(shards)).cast("int")


class ShardedOutput:
    def __init__(self, spark: SparkSession, path: str, shards: int, mode: str, manifest: dict):
        self.spark = spark
        self.path = path.rstrip("/")
        self.shards = shards
        self.mode = mode
        self.manifest = {**manifest, "shards": shards}
        self.fs = output_filesystem(spark, self.path)

    def shard_path(self, shard: int) -> str:
        return f"{self.path}/{SHARD_COL}={shard:05d}"

    def prepare(self) -> list[int]:
        """Check the output path for the mode; return the shards still to write. No data is written."""
        exists = self.fs.exists(self.path) and not self.fs.is_empty_dir(self.path)
        if self.mode == "error" and exists:
            raise OutputExistsError(
                f"output path {self.path} already exists; choose another output.path, or set "
                "output.mode=overwrite to replace it or output.mode=resume to finish an interrupted run"
            )
        if self.mode == "resume" and exists:
            self._check_manifest()
            if self.fs.exists(f"{self.path}/{SUCCESS}"):
                return []
            return [s for s in range(self.shards) if not self.fs.exists(f"{self.shard_path(s)}/{SUCCESS}")]
        if self.mode == "overwrite" and self.fs.exists(self.path):
            self.fs.delete(self.path)
        return list(range(self.shards))

    def start(self) -> None:
        self.fs.check_writable(self.path)
        if not self.fs.exists(f"{self.path}/{MANIFEST}"):
            self.fs.write_text(f"{self.path}/{MANIFEST}", json.dumps(self.manifest, indent=2, sort_keys=True))

    def _check_manifest(self) -> None:
        manifest_path = f"{self.path}/{MANIFEST}"
        if not self.fs.exists(manifest_path):
            raise OutputExistsError(
                f"output path {self.path} exists but was not written by this job (no {MANIFEST}); "
                "it cannot be resumed. Use another output.path or output.mode=overwrite"
            )
        previous = json.loads(self.fs.read_text(manifest_path))
        for key in sorted(set(previous) | set(self.manifest)):
            if previous.get(key) != self.manifest.get(key):
                raise OutputExistsError(
                    f"cannot resume {self.path}: {key} was {previous.get(key)!r} and is now "
                    f"{self.manifest.get(key)!r}. Resume with the same input, model, generation settings and "
                    "output.shards, or start again with output.mode=overwrite"
                )

    def write_shard(self, df: DataFrame, shard: int) -> None:
        # Overwrite: a shard left half-written by a killed run is replaced as a whole.
        df.write.mode("overwrite").parquet(self.shard_path(shard))

    def commit(self) -> None:
        self.fs.write_text(f"{self.path}/{SUCCESS}", "")

    def completed_shards(self) -> list[int]:
        return [s for s in range(self.shards) if self.fs.exists(f"{self.shard_path(s)}/{SUCCESS}")]

    def read(self) -> DataFrame:
        return self.spark.read.parquet(self.path)
