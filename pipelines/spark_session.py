"""The SparkSession a job runs in, built from the config's `spark` section."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pyspark.sql import SparkSession

from pipelines.config import SparkSettings


def worker_environment() -> None:
    """Python workers run this interpreter and can import this package, even from a checkout."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    root = str(Path(__file__).resolve().parent.parent)
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if root not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [root, *paths]))


def with_master(builder, master: str | None):
    """Set the master (None: spark-submit's); a local-mode session serves no other machine, so
    its driver and UI listen on 127.0.0.1 only."""
    if not master:
        return builder
    builder = builder.master(master)
    if master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # the UI binds by this, read when the JVM starts
        builder = builder.config("spark.driver.bindAddress", "127.0.0.1").config("spark.driver.host", "127.0.0.1")
    return builder


def build_session(settings: SparkSettings) -> SparkSession:
    worker_environment()
    builder = with_master(SparkSession.builder.appName(settings.app_name), settings.master)
    # Shard commits rely on the v1 committer: files become visible only when a shard commits.
    builder = builder.config("spark.hadoop.mapreduce.fileoutputcommitter.algorithm.version", "1")
    for key, value in settings.conf.items():
        builder = builder.config(key, str(value))
    return builder.getOrCreate()
