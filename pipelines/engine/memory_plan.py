"""How much memory the model workers of one machine will need, from the model files alone.

Weights in the chosen dtype (from the safetensors headers: no weight is read), the KV cache
budget, the activations of the largest forward pass the batch planner allows, and the Python
runtime, times the workers that run at once, against the memory there is. The driver checks
this before any model loads; nothing here imports torch or Spark.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from pipelines.engine.backends import choose_backend
from pipelines.engine.checkpoint import summarize_model
from pipelines.engine.precision import compute_dtype
from pipelines.models.source import model_config

GiB = 2**30
# A Python worker with pyspark, pyarrow, torch and transformers imported, before any weight
# (measured: ~440 MB), plus the allocator's slack and the tokenizer.
RUNTIME_BYTES = 1 * GiB
# Activations of one prefill forward pass: the PyTorch engine prefills long batches in chunks
# of columns that stay within this.
ACTIVATION_BUDGET = 1 * GiB


class MemoryPlanError(RuntimeError):
    """The planned memory does not fit; the message gives the figures and settings that fit."""


def _element_bytes(dtype: str) -> int:
    return 2 if dtype in ("bfloat16", "float16") else 4  # int8 weights compute in float32


def kv_bytes_per_token(config: dict, element_bytes: int) -> int:
    """Keys and values of one token over all layers."""
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads") or heads
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    return 2 * config["num_hidden_layers"] * kv_heads * head_dim * element_bytes


def activation_bytes_per_token(config: dict, element_bytes: int) -> int:
    """Live activations per prompt token during prefill: the MLP's two wide tensors (the
    projection and its activation) and a few hidden-size ones (residual, norm, attention)."""
    return (2 * config["intermediate_size"] + 6 * config["hidden_size"]) * element_bytes


def prefill_chunk_tokens(config: dict, element_bytes: int) -> int:
    """Prompt tokens (rows x columns) one prefill forward pass may take."""
    return max(256, ACTIVATION_BUDGET // activation_bytes_per_token(config, element_bytes))


@dataclass(frozen=True)
class WorkerMemory:
    """What one worker holds; the weights can be shared by all workers of a machine."""

    weights: int
    weights_shared: bool  # used as stored: pages of the file, one copy per machine
    kv_cache: int
    activations: int
    runtime: int = RUNTIME_BYTES

    @property
    def private(self) -> int:
        return (0 if self.weights_shared else self.weights) + self.kv_cache + self.activations + self.runtime


def worker_memory(source: str, dtype: str, device: str, engine: str, kv_cache_gb: int,
                  max_batch_tokens: int = 0, max_rows_tokens: int = 0, kv_cache: bool = True) -> WorkerMemory:
    """One worker's memory for a model (directory or GGUF file) and the settings it runs with (CPU figures).

    `max_rows_tokens`: the most tokens one batch can hold (batch size x (max prompt + new
    tokens)), 0 when unknown. `kv_cache=False` for work that keeps no KV cache (scoring is
    prefill only): its batches are bounded by the activation budget alone."""
    config = model_config(source)
    kv_cache_bytes = kv_cache_gb * GiB if kv_cache else 0
    backend = choose_backend(source, engine, device, dtype=dtype)
    if backend.weights_file:  # an export: its file is what the backend holds in memory
        compute = "float32" if dtype in ("auto", "int8") else dtype
        weights = (Path(source) / backend.weights_file).stat().st_size
        tokens = backend.step_tokens
        shared = False
    elif backend.weights_as_file:  # the model file's quantised weights (GGUF)
        compute = "float32"
        weights = Path(source).stat().st_size
        tokens = backend.step_tokens
        # llama.cpp repacks quantised weights for the CPU's kernels into buffers of its own: each
        # worker holds a copy, even though the file is mapped
        shared = False
    else:
        checkpoint = summarize_model(source)
        # (the driver's figures: a worker on other hardware may choose another dtype for auto)
        compute = compute_dtype(dtype, checkpoint.stored_dtype, "cuda" if device == "cuda" else "cpu")
        weights = checkpoint.weight_bytes(compute if dtype != "int8" else "int8")
        shared = dtype != "int8" and compute == checkpoint.stored_dtype
        # The batch planner keeps rows x (prompt + new tokens) within the KV budget and maxBatchTokens.
        tokens = kv_cache_bytes // kv_bytes_per_token(config, _element_bytes(compute)) if kv_cache \
            else prefill_chunk_tokens(config, _element_bytes(compute))
        for bound in (max_batch_tokens, max_rows_tokens, prefill_chunk_tokens(config, _element_bytes(compute))):
            tokens = min(tokens, bound or tokens)
    activations = tokens * activation_bytes_per_token(config, _element_bytes(compute))
    return WorkerMemory(weights, shared, kv_cache_bytes, activations)


@dataclass(frozen=True)
class MemoryPlan:
    memory: WorkerMemory
    workers: int  # Python workers running the model at once on one machine (executor)
    available: int | None  # bytes they may use together; None when it cannot be known
    available_from: str  # where that figure comes from, for the log and the error
    workers_from: str  # how the worker count was found

    @property
    def needed(self) -> int:
        shared = self.memory.weights if self.memory.weights_shared else 0
        return shared + self.workers * self.memory.private

    @property
    def fits(self) -> bool:
        return self.available is None or self.needed <= self.available

    def describe(self) -> str:
        m = self.memory
        weights = f"weights {gib(m.weights)}" + (" (shared by the workers)" if m.weights_shared else "")
        have = f"{gib(self.available)} available ({self.available_from})" if self.available is not None \
            else f"available memory unknown ({self.available_from})"
        return (
            f"{self.workers} worker(s) [{self.workers_from}] x ({weights}, KV cache {gib(m.kv_cache)}, "
            f"activations {gib(m.activations)}, runtime {gib(m.runtime)}) = {gib(self.needed)} needed; {have}"
        )


def gib(n: int) -> str:
    return f"{n / GiB:.1f} GiB" if n >= 0.95 * GiB else f"{n / 2**20:.0f} MiB"


def settings_that_fit(plan: MemoryPlan, cores: int, dtype: str, kv_cache_gb: int,
                      worker_memory_for) -> list[str]:
    """Changes that make the plan fit, each on its own: fewer workers, int8, a smaller KV cache.

    `worker_memory_for(dtype, kv_cache_gb)` gives WorkerMemory for other settings.
    """
    if plan.available is None:
        return []
    options = []
    for workers in range(plan.workers - 1, 0, -1):
        if replace(plan, workers=workers).fits:
            options.append(f"spark.task.cpus={max(1, cores // workers)} ({workers} worker(s) at once, "
                           f"{gib(replace(plan, workers=workers).needed)})")
            break
    if dtype != "int8":
        int8 = replace(plan, memory=worker_memory_for("int8", kv_cache_gb))
        if int8.fits:
            options.append(f"dtype int8 ({gib(int8.needed)})")
    if kv_cache_gb > 1:
        small = replace(plan, memory=worker_memory_for(dtype, 1))
        if small.fits:
            options.append(f"kv_cache_gb=1 ({gib(small.needed)})")
    return options
