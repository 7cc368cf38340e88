"""What every model task does around the model: read annotations from Arrow batches, write the
output column back, load the worker's engine with the task's cores, run every row (and, when a
batch fails, each row alone, so that one bad row fails alone), and log progress.
`PartitionRunner` is that loop; a generator or a scorer supplies what it runs on the texts."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Iterator

import pyarrow as pa

import pipelines.faults as faults
from pipelines.engine.params import ModelSpec
from pipelines.spark import model_cache
from pipelines.spark.annotation_schema import ANNOTATION_ARRAY_TYPE
from pipelines.spark.worker_failures import crash_note, leave_crash_note

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


def with_output_column(batch: pa.RecordBatch, output_col: str, values: list, arrow_type,
                       extra: dict[str, pa.Array] | None = None) -> pa.RecordBatch:
    """The batch's other columns, in order, then `output_col` holding `values` (one per row), then
    the `extra` columns."""
    extra = extra or {}
    names = [n for n in batch.schema.names if n != output_col and n not in extra]
    columns = [batch.column(n) for n in names]
    return pa.RecordBatch.from_arrays(columns + [pa.array(values, type=arrow_type), *extra.values()],
                                      names=names + [output_col, *extra])


def shares_of(seconds: float, weights: list[int]) -> list[float]:
    """`seconds` split over rows in proportion to their weights (each row counts at least 1)."""
    total = sum(w + 1 for w in weights)
    return [seconds * (w + 1) / total for w in weights] if weights else []


def log_partition(rows: int, tokens: int, seconds: float) -> None:
    from pyspark import TaskContext

    ctx = TaskContext.get()
    part = ctx.partitionId() if ctx is not None else -1
    log.info(
        "partition %d: %d rows, %d tokens in %.1fs (%.1f tokens/s)",
        part, rows, tokens, seconds, tokens / seconds if seconds > 0 else 0.0,
    )


@dataclass(frozen=True)
class PartitionRunner:
    """Picklable callable for `DataFrame.mapInArrow`: every annotation of the input columns is a
    text; the texts of a batch run together, and each row gets the output annotations of its texts."""

    input_cols: list[str]
    output_col: str
    model: ModelSpec
    on_row_error: str = field(default="fail", kw_only=True)
    memory_plan: str = field(default="", kw_only=True)  # the driver's, told to the user if this worker dies
    # Also write each row's model time (its batch's time, split by the tokens of its results) here.
    seconds_col: str | None = field(default=None, kw_only=True)

    task = "work"  # in messages: "generation failed for the row with id ..."

    # --- what a runner supplies ---------------------------------------------------------------
    def load(self, engine):
        """What runs the texts, from the worker's engine (the engine itself, or a scorer on it)."""
        return engine

    def run(self, worker, texts: list[str], one_by_one: bool = False) -> list:
        """One result per text (`one_by_one`: a single text, after its batch failed)."""
        raise NotImplementedError

    def failed(self, error: BaseException):
        """The result of a text whose run raised, kept with its error (onRowError='keep')."""
        raise NotImplementedError

    def annotations(self, result, source_metadata: dict) -> tuple[list[dict], int]:
        """The output annotations of one text's result, and the tokens it counts for."""
        raise NotImplementedError

    # --- the loop -------------------------------------------------------------------------------
    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from pyspark.sql.pandas.types import to_arrow_type

        log_to_stderr()
        arrow_type = to_arrow_type(ANNOTATION_ARRAY_TYPE)
        worker = None  # loaded on the first non-empty batch: empty partitions cost nothing
        rows = tokens = 0
        started = time.perf_counter()
        leave_crash_note(crash_note(self.model.source, self.model.dtype, self.memory_plan))
        for batch in batches:
            if worker is None and batch.num_rows:
                worker = self.load(worker_engine(self.model))
            per_row = annotations_per_row(batch, self.input_cols)
            batch_started = time.perf_counter()
            results = iter(self._run_all(worker, [a for row in per_row for a in row]))
            batch_seconds = time.perf_counter() - batch_started
            out, row_tokens = [], []
            for row in per_row:
                row_out, made_tokens = [], 0
                for annotation in row:
                    made, n = self.annotations(next(results), dict(annotation["metadata"] or []))
                    row_out.extend(made)
                    made_tokens += n
                out.append(row_out)
                row_tokens.append(made_tokens)
            rows += batch.num_rows
            tokens += sum(row_tokens)
            extra = {}
            if self.seconds_col:
                extra[self.seconds_col] = pa.array(shares_of(batch_seconds, row_tokens), type=pa.float64())
            yield with_output_column(batch, self.output_col, out, arrow_type, extra)
        log_partition(rows, tokens, time.perf_counter() - started)

    def _run_all(self, worker, annotations: list[dict]) -> list:
        """Run all texts at once; if that fails, one by one, so one bad row fails alone."""
        from pipelines.engine.params import InvalidParamError

        texts = [a["result"] or "" for a in annotations]
        if not texts:
            return []
        try:
            return self.run(worker, texts)
        except InvalidParamError:
            raise  # a setting is wrong for every row: no row can succeed
        except Exception as batch_error:
            log.warning("batch of %d texts failed (%s); running them one by one", len(texts), batch_error)
        results = []
        for annotation, text in zip(annotations, texts):
            try:
                results.extend(self.run(worker, [text], one_by_one=True))
            except Exception as e:
                row_id = dict(annotation["metadata"] or []).get("id", "<no id column>")
                if self.on_row_error == "fail":
                    raise RuntimeError(
                        f"{self.task} failed for the row with id {row_id}: {type(e).__name__}: {e}. "
                        "Set onRowError='keep' (output.on_error=keep) to keep such rows with their error"
                    ) from e
                results.append(self.failed(e))
        return results
