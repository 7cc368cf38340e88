"""Load a model directory or GGUF file onto a device, in the requested precision, without ever
holding two copies of the weights.

transformers maps the safetensors file and builds the model in the dtype the file stores:
nothing is read yet, and weights used in that dtype stay pages of the file, which the Python
workers of one machine share through the page cache. Any other precision is made one tensor at
a time, from bytes read out of the file (not through the mapping, whose pages would count
against the worker too): float32 from a bfloat16 file peaks near the float32 weights plus one
tensor, and int8 near the int8 weights plus one layer in float32. A GGUF model is built empty
(on the meta device) and filled the same way, one dequantised tensor at a time.
"""

from __future__ import annotations

import ctypes

import torch

from pipelines.engine.checkpoint import TensorEntry, summarize_model, tensor_index
from pipelines.engine.int8_linear import Int8Linear
from pipelines.engine.params import ModelSpec
from pipelines.engine.precision import compute_dtype
from pipelines.models.families import FAMILIES
from pipelines.models.gguf_file import is_gguf_file, read_gguf_model
from pipelines.models.source import model_config, validate_model_source

_TORCH_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16,
                 "I64": torch.int64, "I32": torch.int32, "I8": torch.int8, "U8": torch.uint8}


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' was requested but this worker has no CUDA device; use 'auto' or 'cpu'")
    return torch.device(device)


def pick_dtype(dtype: str, device: torch.device, stored: str) -> torch.dtype:
    """The dtype the model computes in, for weights stored as `stored` (engine.precision: auto is
    the stored dtype where this device runs it natively, else float32); int8 weights compute in float32."""
    if dtype == "int8" and device.type != "cpu":
        raise ValueError("dtype='int8' (dynamic quantisation) runs on the CPU only; use bfloat16 on CUDA")
    gpu_bf16 = device.type != "cuda" or torch.cuda.is_bf16_supported()
    return getattr(torch, compute_dtype(dtype, stored, device.type, gpu_runs_bfloat16=gpu_bf16))


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
    stay as transformers made them (rotary frequencies are float32 in every precision). A
    parameter still on the meta device (a model built empty) gets a new tensor, shared by every
    module that ties it."""
    owners = {}
    for full_name, param in model.named_parameters(remove_duplicate=False):
        owners.setdefault(id(param), []).append(full_name)
    for name, param in list(model.named_parameters()):
        if param.dtype == dtype and not param.is_meta:
            continue
        source = reader.read(name) if name in reader else param.data
        if param.is_meta:
            loaded = torch.nn.Parameter(source.to(dtype), requires_grad=False)
            for full_name in owners[id(param)]:
                module_name, _, attr = full_name.rpartition(".")
                model.get_submodule(module_name)._parameters[attr] = loaded
        else:
            param.data = source.to(dtype)
        del source
        release_free_memory()


def model_class(source: str):
    """The transformers causal-LM class of a model's family (models.families.FAMILIES)."""
    import transformers

    return getattr(transformers, FAMILIES[model_config(source)["model_type"]].transformers_class)


def load_model(spec: ModelSpec):
    """Return (model, device) for a validated directory or GGUF file; weights from safetensors
    or GGUF only (nothing is unpickled)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one bar per worker load is noise in Spark logs
    source = validate_model_source(spec.source)
    device = pick_device(spec.device)
    stored = summarize_model(source).stored_dtype  # (a GGUF file's header is read once: it is cached)
    compute = pick_dtype(spec.dtype, device, stored)
    model = load_gguf(spec, compute) if is_gguf_file(source) else load_safetensors(source, spec, compute, stored)
    model.eval()
    return model.to(device), device


def load_safetensors(model_dir, spec: ModelSpec, compute: torch.dtype, stored_dtype: str):
    """A validated model directory's safetensors, mapped in the dtype most of them are stored in
    (`stored_dtype`), then converted."""
    stored = getattr(torch, stored_dtype)
    model = model_class(str(model_dir)).from_pretrained(
        str(model_dir),
        dtype=stored,  # maps the file: no weight is read or copied here
        use_safetensors=True,  # never unpickle weights
        attn_implementation="sdpa",
    )
    if spec.dtype == "int8" or compute != stored:
        load_weights(model, TensorReader(tensor_index(model_dir)), spec.dtype, compute)
    return model


def load_gguf(spec: ModelSpec, compute: torch.dtype):
    from pipelines.engine.gguf_tensors import GgufTensorReader

    gguf = read_gguf_model(spec.source)
    cls = model_class(spec.source)
    config = cls.config_class(**gguf.config)
    config._attn_implementation = "sdpa"
    with torch.device("meta"):  # parameters without memory: each is filled from the file below
        model = cls(config)
    load_weights(model, GgufTensorReader(gguf, model), spec.dtype, compute)
    materialize_buffers(model, spec.source)
    return model


def load_weights(model, reader, dtype: str, compute: torch.dtype) -> None:
    """Read the weights `reader` holds into `model`: int8 linear layers first when asked, then
    every other parameter in the compute dtype."""
    try:
        if dtype == "int8":
            quantize_linear_layers(model, reader)
        convert_parameters(model, reader, compute)
    finally:
        reader.close()
    model.config.dtype = compute


def materialize_buffers(model, source: str) -> None:
    """Rotary frequencies are computed, not stored: a model built on the meta device gets them
    by building its rotary modules again, on the CPU. Anything else left empty is a tensor the
    file lacks."""
    for prefix, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if type(child).__name__.endswith("RotaryEmbedding") and any(b.is_meta for b in child.buffers()):
                setattr(module, child_name, type(child)(config=child.config))
    missing = [n for n, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if missing:
        raise ValueError(f"{source} has no tensor for {', '.join(missing[:5])}"
                         + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
