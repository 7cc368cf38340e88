"""What runs inside a Spark task: Arrow batches of annotations in, batches with generations out.

It reads the prompt annotations, hands the texts to the worker's cached engine, and writes
one output annotation per generated sequence, keeping every input row and its order.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.engine.params import GenerationParams
from pipelines.spark.annotation_schema import document
from pipelines.spark.partition_rows import PartitionRunner, task_cores

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
class PartitionGenerator(PartitionRunner):
    """Every prompt annotation gets one output annotation per generated sequence."""

    params: GenerationParams
    batch_size: int
    max_batch_tokens: int = 0

    task = "generation"

    def run(self, engine, prompts: list[str], one_by_one: bool = False) -> list:
        return engine.complete(prompts, self.params, 1 if one_by_one else self.batch_size,
                               0 if one_by_one else self.max_batch_tokens)

    def failed(self, error: BaseException) -> list:
        from pipelines.engine.engine import failed

        return [failed(error)] * self.params.n_return_sequences

    def annotations(self, completions, source_metadata: dict) -> tuple[list[dict], int]:
        return ([document(c.text, output_metadata(source_metadata, c, sequence)) for sequence, c in enumerate(completions)],
                sum(c.completion_tokens for c in completions))
