"""What the notebooks share: the SparkSession (Databricks' own, or a local one) and display."""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession


def spark_session(master: str = "local[2]") -> SparkSession:
    """The active session (a Databricks notebook's `spark`), or a local one started here."""
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    from pipelines.jobs.config import SparkSettings
    from pipelines.jobs.session import build_session

    return build_session(SparkSettings(master=master, app_name="starcoder-pipelines-notebook"))


def show(df: DataFrame, n: int = 5) -> None:
    """Databricks' display() where it exists, a text table elsewhere."""
    try:
        display(df.limit(n))  # noqa: F821  (defined by Databricks notebooks)
    except NameError:
        df.show(n, truncate=100, vertical=False)
