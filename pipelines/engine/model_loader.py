"""Load a StarCoder2 model directory onto a device, in the requested precision, safely."""

from __future__ import annotations

import torch

from pipelines.engine.params import ModelSpec
from pipelines.model_source import validate_model_dir


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' was requested but this worker has no CUDA device; use 'auto' or 'cpu'")
    return torch.device(device)


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """The dtype weights are loaded in; int8 loads float32 and is quantised afterwards."""
    if dtype == "auto":
        # bf16 is the native precision on GPUs; on CPUs fp32 is faster than bf16 matmuls here.
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype == "int8":
        if device.type != "cpu":
            raise ValueError("dtype='int8' (dynamic quantisation) runs on the CPU only; use bfloat16 on CUDA")
        return torch.float32
    return getattr(torch, dtype)


def load_model(spec: ModelSpec):
    """Return (model, device) for a validated directory; weights from safetensors only."""
    from transformers import Starcoder2ForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one bar per worker load is noise in Spark logs

    model_dir = validate_model_dir(spec.source)
    device = pick_device(spec.device)
    model = Starcoder2ForCausalLM.from_pretrained(
        str(model_dir),
        dtype=pick_dtype(spec.dtype, device),
        use_safetensors=True,  # never unpickle weights
        attn_implementation="sdpa",
    )
    model.eval()
    if spec.dtype == "int8":
        model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    return model.to(device), device
