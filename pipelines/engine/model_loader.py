"""Load a StarCoder2 model directory onto a device, in the requested precision, without ever
holding two copies of the weights.

transformers maps the safetensors file and builds the model in the dtype the file stores:
nothing is read yet, and weights used in that dtype stay pages of the file, which the Python
workers of one machine share through the page cache. Any other precision is made one tensor at
a time, from bytes read out of the file (not through the mapping, whose pages would count
against the worker too): float32 from a bfloat16 file peaks near the float32 weights plus one
tensor, and int8 near the int8 weights plus one layer in float32.
"""

from __future__ import annotations

import ctypes

import torch

from pipelines.engine.checkpoint import TensorEntry, summarize_checkpoint, tensor_index
from pipelines.engine.int8_linear import Int8Linear
from pipelines.engine.params import ModelSpec
from pipelines.model_source import validate_model_dir

_TORCH_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16,
                 "I64": torch.int64, "I32": torch.int32, "I8": torch.int8, "U8": torch.uint8}


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' was requested but this worker has no CUDA device; use 'auto' or 'cpu'")
    return torch.device(device)


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """The dtype the model computes in; int8 weights compute in float32."""
    if dtype == "auto":
        # bf16 is the native precision on GPUs; on CPUs fp32 keeps results closest to the reference.
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype == "int8":
        if device.type != "cpu":
            raise ValueError("dtype='int8' (dynamic quantisation) runs on the CPU only; use bfloat16 on CUDA")
        return torch.float32
    return getattr(torch, dtype)


class TensorReader:
    """Reads one tensor at a time from safetensors files into fresh memory."""

    def __init__(self, entries: dict[str, TensorEntry]):
        self.entries = entries
        self._files = {}

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def read(self, name: str) -> torch.Tensor:
        entry = self.entries[name]
        dtype = _TORCH_DTYPES[entry.dtype]
        if entry.nbytes == 0:
            return torch.empty(entry.shape, dtype=dtype)
        f = self._files.get(entry.file)
        if f is None:
            f = self._files[entry.file] = open(entry.file, "rb")
        buffer = bytearray(entry.nbytes)
        f.seek(entry.offset)
        if f.readinto(buffer) != entry.nbytes:
            raise OSError(f"{entry.file}: could not read tensor {name} ({entry.nbytes} bytes); the file is truncated")
        return torch.frombuffer(buffer, dtype=dtype).reshape(entry.shape)

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()


def release_free_memory() -> None:
    """Hand freed heap memory back to the system. glibc keeps what a layer's temporaries freed
    between the weights that stay, so without this a worker's memory grows with every layer."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


def quantize_linear_layers(model, reader: TensorReader) -> None:
    """Replace every nn.Linear by an Int8Linear, one layer at a time."""
    for prefix, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if not isinstance(child, torch.nn.Linear):
                continue
            name = f"{prefix}.{child_name}" if prefix else child_name
            weight = reader.read(f"{name}.weight") if f"{name}.weight" in reader else child.weight.data
            bias = None
            if child.bias is not None:
                bias = reader.read(f"{name}.bias") if f"{name}.bias" in reader else child.bias.data
            setattr(module, child_name, Int8Linear.from_weight(weight, bias))
            del weight, bias
            release_free_memory()


def convert_parameters(model, reader: TensorReader, dtype: torch.dtype) -> None:
    """Give every remaining parameter `dtype`, one tensor at a time (tied ones once). Buffers
    stay as transformers made them (rotary frequencies are float32 in every precision)."""
    for name, param in model.named_parameters():
        if param.dtype == dtype:
            continue
        source = reader.read(name) if name in reader else param.data
        param.data = source.to(dtype)
        del source
        release_free_memory()


def load_model(spec: ModelSpec):
    """Return (model, device) for a validated directory; weights from safetensors only."""
    from transformers import Starcoder2ForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one bar per worker load is noise in Spark logs

    model_dir = validate_model_dir(spec.source)
    device = pick_device(spec.device)
    compute = pick_dtype(spec.dtype, device)
    stored = getattr(torch, summarize_checkpoint(model_dir).stored_dtype)
    model = Starcoder2ForCausalLM.from_pretrained(
        str(model_dir),
        dtype=stored,  # maps the file: no weight is read or copied here
        use_safetensors=True,  # never unpickle weights
        attn_implementation="sdpa",
    )
    model.eval()
    if spec.dtype == "int8" or compute != stored:
        reader = TensorReader(tensor_index(model_dir))
        try:
            if spec.dtype == "int8":
                quantize_linear_layers(model, reader)
            convert_parameters(model, reader, compute)
        finally:
            reader.close()
        model.config.dtype = compute
    return model.to(device), device
