"""The SparkSession a job runs in, built from the config's `spark` section."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

from pyspark.sql import SparkSession

from pipelines.jobs.config import SparkSettings


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
    """A classic session, or a Spark Connect one when `spark.remote` (or $SPARK_REMOTE) names a
    server: Databricks serverless and shared clusters give notebooks such a session."""
    worker_environment()
    remote = settings.remote or os.environ.get("SPARK_REMOTE")
    if remote:
        builder = SparkSession.builder.remote(remote).appName(settings.app_name)
        if remote.startswith("local"):  # pyspark starts the server here: it listens on 127.0.0.1 only
            os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
            builder = builder.config("spark.connect.grpc.binding.address", "127.0.0.1")
            # pyspark starts the local server with every setting, then sets each again at run
            # time, where the static ones (spark.hadoop.*, spark.driver.*) are refused with a warning.
            warnings.filterwarnings("ignore", message=r"Failed to set spark\..* due to \[CANNOT_MODIFY_CONFIG\]")
    else:
        builder = with_master(SparkSession.builder.appName(settings.app_name), settings.master)
    # Shard commits rely on the v1 committer: files become visible only when a shard commits.
    builder = builder.config("spark.hadoop.mapreduce.fileoutputcommitter.algorithm.version", "1")
    for key, value in settings.conf.items():
        builder = builder.config(key, str(value))
    return builder.getOrCreate()
