"""What runs inside a Spark task: Arrow batches of annotations in, batches with generations out.

It reads the prompt annotations, hands the texts to the worker's cached engine, and writes
one output annotation per generated sequence, keeping every input row and its order.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterator

import pyarrow as pa

from pipelines.engine.params import GenerationParams, ModelSpec
from pipelines.spark.annotation_schema import ANNOTATION_ARRAY_TYPE, document
from pipelines.spark.partition_rows import (
    annotations_per_row,
    log,
    log_partition,
    log_to_stderr,
    task_cores,
    with_output_column,
    worker_engine,
)
from pipelines.spark.worker_failures import crash_note, leave_crash_note

__all__ = ["PartitionGenerator", "output_metadata", "task_cores"]


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
    if completion.logprob is not None:
        meta["logprob"] = repr(completion.logprob)
        meta["mean_logprob"] = repr(completion.mean_logprob) if completion.mean_logprob is not None else "NaN"
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

        log_to_stderr()
        arrow_type = to_arrow_type(ANNOTATION_ARRAY_TYPE)
        engine = None  # loaded on the first non-empty batch: empty partitions cost nothing
        rows = tokens = 0
        started = time.perf_counter()
        leave_crash_note(crash_note(self.model.source, self.model.dtype, self.memory_plan))
        for batch in batches:
            if engine is None and batch.num_rows:
                engine = worker_engine(self.model)
            generations, batch_tokens = self._generate(engine, batch)
            rows += batch.num_rows
            tokens += batch_tokens
            yield with_output_column(batch, self.output_col, generations, arrow_type)
        log_partition(rows, tokens, time.perf_counter() - started)

    def _generate(self, engine, batch: pa.RecordBatch) -> tuple[list[list[dict]], int]:
        # Every annotation of every input column of every row is a prompt.
        per_row = annotations_per_row(batch, self.input_cols)
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
