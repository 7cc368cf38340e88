"""What every model source shares: its error, and local paths for DBFS and file: URIs."""

from __future__ import annotations


class ModelSourceError(ValueError):
    """A model directory or name cannot be used; the message says why and what to do."""


def to_local_path(location: str) -> str:
    """Map DBFS URIs to their FUSE mount (what Python on a Databricks worker can open)."""
    if location.startswith("dbfs:/"):
        return "/dbfs/" + location[len("dbfs:/"):].lstrip("/")
    if location.startswith("file:"):
        return location[len("file:"):] if not location.startswith("file://") else location[len("file://"):]
    return location
