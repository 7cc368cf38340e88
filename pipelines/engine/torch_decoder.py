"""The PyTorch engine: transformers' StarCoder2 model driven by our own batched decode loop."""

from __future__ import annotations

import torch

from pipelines import faults
from pipelines.engine.generate import SequenceOutput, generate_batch
from pipelines.engine.model_loader import load_model
from pipelines.engine.params import ModelSpec


class TorchDecoder:
    """Generates one planned batch at a time (the caller sorts and plans the batches)."""

    schedules_itself = False

    def __init__(self, model, device: torch.device, eos_id: int):
        self.model = model
        self.device = device
        self.eos_id = eos_id

    @classmethod
    def load(cls, spec: ModelSpec, eos_id: int) -> "TorchDecoder":
        if spec.num_threads:
            torch.set_num_threads(spec.num_threads)
        model, device = load_model(spec)
        return cls(model, device, eos_id)

    def use_threads(self, n: int) -> None:
        if n > 0 and torch.get_num_threads() != n:
            torch.set_num_threads(n)

    def generate(self, prompts, params, seeds, stop_check, row_stop_ids) -> list[SequenceOutput]:
        """Generate a batch; if it runs out of memory, generate each half on its own instead."""
        try:
            faults.check_batch(len(prompts))
            return generate_batch(
                self.model, prompts, params, self.eos_id, self.device,
                seeds=seeds, stop_check=stop_check, row_stop_ids=row_stop_ids,
            )
        except (torch.OutOfMemoryError, MemoryError):
            if len(prompts) == 1:
                raise
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            half = len(prompts) // 2
            return self.generate(
                prompts[:half], params, seeds[:half], stop_check, row_stop_ids[:half]
            ) + self.generate(prompts[half:], params, seeds[half:], stop_check, row_stop_ids[half:])
