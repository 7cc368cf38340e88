"""What a Spark session runs on: Spark Connect or a classic session, its master, the partitions
that keep its cores busy. Read from the session itself, for the jobs and the annotators alike."""

from __future__ import annotations


def is_spark_connect(spark) -> bool:
    """A Spark Connect session (Databricks serverless and shared clusters, `builder.remote`)."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


def default_parallelism(spark) -> int:
    """Partitions a stage should have to keep every core busy: spark.default.parallelism, else
    the cores of a local master, else the SparkContext's figure (classic sessions), else
    executors x cores from the session conf (a Spark Connect client has no SparkContext)."""
    from pipelines.spark.memory_check import local_cores

    conf = {key: spark.conf.get(key, None) for key in
            ("spark.default.parallelism", "spark.master", "spark.executor.instances", "spark.executor.cores")}
    if conf["spark.default.parallelism"]:
        return int(conf["spark.default.parallelism"])
    cores = local_cores(conf["spark.master"] or "")
    if cores:
        return cores
    if not is_spark_connect(spark):
        return spark.sparkContext.defaultParallelism
    if conf["spark.executor.instances"] and conf["spark.executor.cores"]:
        return int(conf["spark.executor.instances"]) * int(conf["spark.executor.cores"])
    return 8  # a Spark Connect cluster whose conf does not give its size: a few partitions per shard


def session_master(spark) -> str:
    """The master URL as the session's conf says (Spark Connect: the server's)."""
    return spark.conf.get("spark.master", None) or "unknown"
