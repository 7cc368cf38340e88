"""The PyTorch engine: a transformers causal LM driven by our own batched decode loop."""

from __future__ import annotations

import torch

from pipelines import faults
from pipelines.engine import memory_plan
from pipelines.engine.generate import SequenceOutput, generate_batch
from pipelines.engine.model_loader import load_model
from pipelines.engine.params import ModelSpec
from pipelines.model_families import standard_config


def compute_element_size(model) -> int:
    return model.get_input_embeddings().weight.element_size()  # int8 weights still compute in fp32


class TorchDecoder:
    """Generates one planned batch at a time (the caller sorts and plans the batches)."""

    schedules_itself = False

    def __init__(self, model, device: torch.device, eos_id: int, kv_cache_gb: int = 1):
        self.model = model
        self.device = device
        self.eos_id = eos_id
        config, element = standard_config(model.config.to_dict()), compute_element_size(model)
        # Tokens the KV cache may hold at once: the caller plans batches within it.
        self.kv_token_budget = kv_cache_gb * 2**30 // memory_plan.kv_bytes_per_token(config, element)
        self.prefill_chunk_tokens = memory_plan.prefill_chunk_tokens(config, element)

    @classmethod
    def load(cls, spec: ModelSpec, eos_id: int) -> "TorchDecoder":
        if spec.num_threads:
            torch.set_num_threads(spec.num_threads)
        model, device = load_model(spec)
        return cls(model, device, eos_id, spec.kv_cache_gb)

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
                prefill_chunk_tokens=self.prefill_chunk_tokens,
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
