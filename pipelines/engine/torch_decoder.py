"""The PyTorch engine: a transformers causal LM driven by our own batched decode loop."""

from __future__ import annotations

import torch

import pipelines.faults as faults
from pipelines.engine import memory_plan
from pipelines.engine.backends import Request, SequenceOutput
from pipelines.engine.generate import generate_requests
from pipelines.engine.model_loader import load_model
from pipelines.engine.params import ModelSpec
from pipelines.engine.prefix_sharing import grouped, shared_prefixes
from pipelines.models.families import standard_config


def compute_element_size(model) -> int:
    return model.get_input_embeddings().weight.element_size()  # int8 weights still compute in fp32


# Prompts sharing fewer tokens are prefilled on their own: reusing a row costs a copy of it.
MIN_SHARED_TOKENS = 32


class TorchDecoder:
    """Runs requests through the continuous decode loop (pipelines.engine.generate)."""

    def __init__(self, model, device: torch.device, eos_id: int, kv_cache_gb: int = 1, prefix_caching: bool = True):
        self.model = model
        self.device = device
        self.eos_id = eos_id
        self.prefix_caching = prefix_caching
        self.window = getattr(model.config, "sliding_window", None) or float("inf")
        config, element = standard_config(model.config.to_dict()), compute_element_size(model)
        # Tokens the KV cache may hold at once: the caller plans batches within it.
        self.kv_token_budget = kv_cache_gb * 2**30 // memory_plan.kv_bytes_per_token(config, element)
        self.prefill_chunk_tokens = memory_plan.prefill_chunk_tokens(config, element)

    @classmethod
    def load(cls, spec: ModelSpec, eos_id: int) -> "TorchDecoder":
        if spec.num_threads:
            torch.set_num_threads(spec.num_threads)
        model, device = load_model(spec)
        return cls(model, device, eos_id, spec.kv_cache_gb, spec.prefix_caching)

    def _prefix_plan(self, requests: list[Request]) -> tuple[list[int], list[int | None]]:
        """The order to run requests in and the earlier request each starts from (prefix caching):
        groups of prompts behind one prefix, groups by their first prompt's length (little padding)."""
        if not self.prefix_caching:
            return list(range(len(requests))), [None] * len(requests)
        prompts = [r.prompt for r in requests]
        order, reuses = shared_prefixes(prompts, MIN_SHARED_TOKENS)
        # A prompt row is cropped to the shared prefix: only while no sliding window has dropped columns.
        reuses = [j if j is not None and len(prompts[j]) < self.window else None for j in reuses]
        return grouped(order, reuses, key=lambda head: len(prompts[head])), reuses

    def use_threads(self, n: int) -> None:
        if n > 0 and torch.get_num_threads() != n:
            torch.set_num_threads(n)

    def generate(self, requests: list[Request], params, stop_check, max_rows: int,
                 max_tokens: int = 0) -> list[list[SequenceOutput]]:
        """Every sample of every request, at most `max_rows` rows and `max_tokens` tokens at once
        (bounded by the KV cache budget too); if that runs out of memory, half as many rows."""
        bound = min(max_tokens, self.kv_token_budget) if max_tokens else self.kv_token_budget
        order, reuses = self._prefix_plan(requests)
        try:
            faults.check_batch(min(max_rows, sum(len(r.seeds) for r in requests)))
            position = {r: k for k, r in enumerate(order)}
            outputs = generate_requests(
                self.model, [requests[r] for r in order], params, self.eos_id, self.device, max_rows, bound,
                stop_check=stop_check, prefill_chunk_tokens=self.prefill_chunk_tokens,
                reuses=[None if reuses[r] is None else position[reuses[r]] for r in order],
            )
            return [outputs[position[r]] for r in range(len(requests))]
        except (torch.OutOfMemoryError, MemoryError):
            if max_rows == 1:
                raise
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            return self.generate(requests, params, stop_check, max_rows // 2, max_tokens)
