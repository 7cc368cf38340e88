"""What runs inside a Spark task for scoring: Arrow batches of documents in, one score each out.

The texts of a whole Arrow batch are scored together, so the engine sorts and packs their
windows into full forward passes; every input row and its order are kept.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Iterator

import pyarrow as pa

from pipelines.engine.params import ModelSpec, ScoringParams
from pipelines.spark.annotation_schema import ANNOTATION_ARRAY_TYPE, document
from pipelines.spark.partition_rows import (
    annotations_per_row,
    log,
    log_partition,
    log_to_stderr,
    with_output_column,
    worker_engine,
)
from pipelines.spark.worker_failures import crash_note, leave_crash_note


def number(value: float) -> str:
    """A float as metadata text that Spark casts back exactly ("NaN" when undefined)."""
    return "NaN" if math.isnan(value) else repr(value)


def score_metadata(source: dict, score) -> dict[str, str]:
    meta = dict(source or {})
    meta.update(
        perplexity=number(score.perplexity),
        mean_logprob=number(score.mean_logprob),
        logprob=number(score.logprob),
        tokens=str(score.tokens),
        windows=str(score.windows),
    )
    if score.error is not None:
        meta["error"] = score.error
    return meta


@dataclass(frozen=True)
class PartitionScorer:
    """Picklable callable for `DataFrame.mapInArrow`."""

    input_cols: list[str]
    output_col: str
    model: ModelSpec
    params: ScoringParams
    on_row_error: str = "fail"
    memory_plan: str = ""  # the driver's memory plan, told to the user if this worker dies

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from pyspark.sql.pandas.types import to_arrow_type

        from pipelines.engine.scoring import DocumentScorer

        log_to_stderr()
        arrow_type = to_arrow_type(ANNOTATION_ARRAY_TYPE)
        scorer = None  # loaded on the first non-empty batch: empty partitions cost nothing
        rows = tokens = 0
        started = time.perf_counter()
        leave_crash_note(crash_note(self.model.source, self.model.dtype, self.memory_plan))
        for batch in batches:
            if scorer is None and batch.num_rows:
                scorer = DocumentScorer.from_engine(worker_engine(self.model))
            per_row = annotations_per_row(batch, self.input_cols)
            annotations = [a for row in per_row for a in row]
            scores = iter(self._score(scorer, annotations))
            out = []
            for row in per_row:
                row_scores = []
                for annotation in row:
                    score = next(scores)
                    tokens += score.tokens
                    meta = score_metadata(dict(annotation["metadata"] or []), score)
                    row_scores.append(document(meta["perplexity"], meta))
                out.append(row_scores)
            rows += batch.num_rows
            yield with_output_column(batch, self.output_col, out, arrow_type)
        log_partition(rows, tokens, time.perf_counter() - started)

    def _score(self, scorer, annotations: list[dict]) -> list:
        """Score all documents at once; if that fails, one by one, so one bad row fails alone."""
        from pipelines.engine.params import InvalidParamError
        from pipelines.engine.scoring import failed_score

        texts = [a["result"] or "" for a in annotations]
        if not texts:
            return []
        try:
            return scorer.score(texts, self.params)
        except InvalidParamError:
            raise  # a setting is wrong for every row: no row can succeed
        except Exception as batch_error:
            log.warning("batch of %d documents failed (%s); scoring row by row", len(texts), batch_error)
        results = []
        for annotation, text in zip(annotations, texts):
            try:
                results.extend(scorer.score([text], self.params))
            except Exception as e:
                row_id = dict(annotation["metadata"] or []).get("id", "<no id column>")
                if self.on_row_error == "fail":
                    raise RuntimeError(
                        f"scoring failed for the row with id {row_id}: {type(e).__name__}: {e}. "
                        "Set onRowError='keep' (output.on_error=keep) to keep such rows with their error"
                    ) from e
                results.append(failed_score(e))
        return results
