"""What every model task does around the model: read annotations from Arrow batches, write the
output column back, load the worker's engine with the task's cores, and log progress."""

from __future__ import annotations

import logging
from dataclasses import replace

import pyarrow as pa

import pipelines.faults as faults
from pipelines.engine.params import ModelSpec
from pipelines.spark import model_cache

log = logging.getLogger("pipelines.worker")


def log_to_stderr() -> None:
    """Per-partition progress lines go to the executor's stderr (the console in local mode)."""
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)


def task_cores(default: int = 1) -> int:
    """Cores Spark reserved for this task (spark.task.cpus); `default` outside a task."""
    from pyspark import TaskContext

    ctx = TaskContext.get()
    return ctx.cpus() if ctx is not None else default


def worker_engine(model: ModelSpec):
    """The worker's cached engine for this spec, using the task's cores unless numThreads is set."""
    faults.at_partition_start()
    # torch adjusts per task; OpenVINO compiles with it.
    spec = replace(model, num_threads=model.num_threads or task_cores())
    engine = model_cache.get_engine(spec)
    engine.use_threads(spec.num_threads)
    return engine


def annotations_per_row(batch: pa.RecordBatch, input_cols: list[str]) -> list[list[dict]]:
    """Every annotation of every input column, row by row (a null cell has none)."""
    per_row: list[list[dict]] = [[] for _ in range(batch.num_rows)]
    for col in input_cols:
        for r, cell in enumerate(batch.column(batch.schema.get_field_index(col)).to_pylist()):
            per_row[r].extend(cell or [])
    return per_row


def with_output_column(batch: pa.RecordBatch, output_col: str, values: list, arrow_type) -> pa.RecordBatch:
    """The batch's other columns, in order, then `output_col` holding `values` (one per row)."""
    names = [n for n in batch.schema.names if n != output_col]
    columns = [batch.column(i) for i, n in enumerate(batch.schema.names) if n != output_col]
    return pa.RecordBatch.from_arrays(columns + [pa.array(values, type=arrow_type)], names=names + [output_col])


def log_partition(rows: int, tokens: int, seconds: float) -> None:
    from pyspark import TaskContext

    ctx = TaskContext.get()
    part = ctx.partitionId() if ctx is not None else -1
    log.info(
        "partition %d: %d rows, %d tokens in %.1fs (%.1f tokens/s)",
        part, rows, tokens, seconds, tokens / seconds if seconds > 0 else 0.0,
    )
