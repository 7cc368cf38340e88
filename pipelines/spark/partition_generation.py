"""What runs inside a Spark task: Arrow batches of annotations in, batches with generations out.

It reads the prompt annotations, hands the texts to the worker's cached engine, and writes
one output annotation per generated sequence, keeping every input row and its order.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Iterator

import pyarrow as pa

from pipelines import faults
from pipelines.annotators.annotation_schema import ANNOTATION_ARRAY_TYPE, document
from pipelines.engine.params import GenerationParams, ModelSpec
from pipelines.spark import model_cache
from pipelines.spark.worker_failures import crash_note, leave_crash_note

log = logging.getLogger("pipelines.worker")


def _log_to_stderr() -> None:
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


def output_metadata(source: dict, completion, sequence: int) -> dict[str, str]:
    meta = dict(source or {})
    meta.update(
        prompt_tokens=str(completion.prompt_tokens),
        completion_tokens=str(completion.completion_tokens),
        finish_reason=completion.finish_reason,
        truncated=str(completion.truncated).lower(),
        seed="none" if completion.seed is None else str(completion.seed),
        sequence=str(sequence),
    )
    if completion.error is not None:
        meta["error"] = completion.error
    return meta


@dataclass(frozen=True)
class PartitionGenerator:
    """Picklable callable for `DataFrame.mapInArrow`."""

    input_cols: list[str]
    output_col: str
    model: ModelSpec
    params: GenerationParams
    batch_size: int
    on_row_error: str = "fail"
    max_batch_tokens: int = 0
    memory_plan: str = ""  # the driver's memory plan, told to the user if this worker dies

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from pyspark.sql.pandas.types import to_arrow_type

        _log_to_stderr()
        arrow_type = to_arrow_type(ANNOTATION_ARRAY_TYPE)
        engine = None  # loaded on the first non-empty batch: empty partitions cost nothing
        rows = tokens = 0
        started = time.perf_counter()
        leave_crash_note(crash_note(self.model.source, self.model.dtype, self.memory_plan))
        for batch in batches:
            if engine is None and batch.num_rows:
                faults.at_partition_start()
                # The task's cores unless set: torch adjusts per task, OpenVINO compiles with it.
                spec = replace(self.model, num_threads=self.model.num_threads or task_cores())
                engine = model_cache.get_engine(spec)
                engine.use_threads(spec.num_threads)
            generations, batch_tokens = self._generate(engine, batch)
            rows += batch.num_rows
            tokens += batch_tokens
            columns = [batch.column(i) for i, n in enumerate(batch.schema.names) if n != self.output_col]
            names = [n for n in batch.schema.names if n != self.output_col]
            yield pa.RecordBatch.from_arrays(
                columns + [pa.array(generations, type=arrow_type)], names=names + [self.output_col]
            )
        self._log_partition(rows, tokens, time.perf_counter() - started)

    def _generate(self, engine, batch: pa.RecordBatch) -> tuple[list[list[dict]], int]:
        # Every annotation of every input column of every row is a prompt.
        per_row: list[list[dict]] = []
        for col in self.input_cols:
            for r, annotations in enumerate(batch.column(batch.schema.get_field_index(col)).to_pylist()):
                if r == len(per_row):
                    per_row.append([])
                per_row[r].extend(annotations or [])
        while len(per_row) < batch.num_rows:
            per_row.append([])

        annotations = [a for row in per_row for a in row]
        completions = iter(self._complete(engine, annotations))
        generations, tokens = [], 0
        for row in per_row:
            out = []
            for annotation in row:
                for seq, completion in enumerate(next(completions)):
                    tokens += completion.completion_tokens
                    out.append(document(completion.text, output_metadata(dict(annotation["metadata"] or []), completion, seq)))
            generations.append(out)
        return generations, tokens

    def _complete(self, engine, annotations: list[dict]) -> list:
        """Complete all prompts at once; if that fails, one by one, so one bad row fails alone."""
        from pipelines.engine.engine import failed
        from pipelines.engine.params import InvalidParamError

        prompts = [a["result"] for a in annotations]
        if not prompts:
            return []
        try:
            return engine.complete(prompts, self.params, self.batch_size, self.max_batch_tokens)
        except InvalidParamError:
            raise  # a setting is wrong for every row: no row can succeed
        except Exception as batch_error:
            log.warning("batch of %d prompts failed (%s); retrying row by row", len(prompts), batch_error)
        results = []
        for annotation, prompt in zip(annotations, prompts):
            try:
                results.extend(engine.complete([prompt], self.params, 1))
            except Exception as e:
                row_id = dict(annotation["metadata"] or []).get("id", "<no id column>")
                if self.on_row_error == "fail":
                    raise RuntimeError(
                        f"generation failed for the row with id {row_id}: {type(e).__name__}: {e}. "
                        "Set onRowError='keep' (output.on_error=keep) to keep such rows with their error"
                    ) from e
                results.append([failed(e)] * self.params.n_return_sequences)
        return results

    def _log_partition(self, rows: int, tokens: int, seconds: float) -> None:
        from pyspark import TaskContext

        ctx = TaskContext.get()
        part = ctx.partitionId() if ctx is not None else -1
        log.info(
            "partition %d: %d rows, %d tokens in %.1fs (%.1f tokens/s)",
            part, rows, tokens, seconds, tokens / seconds if seconds > 0 else 0.0,
        )
