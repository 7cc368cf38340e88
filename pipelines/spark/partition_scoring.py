"""What runs inside a Spark task for scoring: Arrow batches of documents in, one score each out.

The texts of a whole Arrow batch are scored together, so the engine sorts and packs their
windows into full forward passes; every input row and its order are kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pipelines.engine.params import ScoringParams
from pipelines.spark.annotation_schema import document
from pipelines.spark.partition_rows import PartitionRunner


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
class PartitionScorer(PartitionRunner):
    """Every document annotation gets one output annotation: its perplexity, with the figures."""

    params: ScoringParams

    task = "scoring"

    def load(self, engine):
        from pipelines.engine.scoring import DocumentScorer

        return DocumentScorer.from_engine(engine)

    def run(self, scorer, texts: list[str], one_by_one: bool = False) -> list:
        return scorer.score(texts, self.params)

    def failed(self, error: BaseException):
        from pipelines.engine.scoring import failed_score

        return failed_score(error)

    def annotations(self, score, source_metadata: dict) -> tuple[list[dict], int]:
        meta = score_metadata(source_metadata, score)
        return [document(meta["perplexity"], meta)], score.tokens
