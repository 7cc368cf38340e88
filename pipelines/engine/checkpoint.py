"""What a safetensors checkpoint holds, read from its headers alone: names, dtypes, shapes, offsets.

The driver plans memory from this without reading a single weight, and the loader reads each
tensor's bytes from it one at a time. Nothing here imports torch.
"""

from __future__ import annotations

import json
import re
import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

# safetensors dtype names -> bytes per element
ELEMENT_BYTES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
    "F8_E4M3": 1, "F8_E5M2": 1,
}
# safetensors dtype names -> the names the engine uses for a model's dtype
DTYPE_NAMES = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}
_MAX_HEADER = 100 * 2**20  # safetensors' own limit


class CheckpointError(ValueError):
    """A weights file cannot be read as safetensors; the message names the file."""


@dataclass(frozen=True)
class TensorEntry:
    file: Path
    dtype: str  # safetensors name: F32, BF16, ...
    shape: tuple[int, ...]
    offset: int  # absolute byte offset of the data in `file`
    nbytes: int

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


def read_header(path: Path) -> dict[str, TensorEntry]:
    """The tensors of one .safetensors file, from its JSON header."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise CheckpointError(f"{path} is too short to be a safetensors file ({size} bytes)")
        (header_len,) = struct.unpack("<Q", raw)
        if header_len > min(_MAX_HEADER, size - 8):
            raise CheckpointError(f"{path} is not a valid safetensors file (header length {header_len})")
        try:
            header = json.loads(f.read(header_len))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{path} has an unreadable safetensors header: {e}") from e
    base = 8 + header_len
    entries = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        if base + end > size:
            raise CheckpointError(
                f"{path} is truncated: tensor {name} ends at byte {base + end}, the file has {size}. "
                "Copy the file again"
            )
        entries[name] = TensorEntry(path, info["dtype"], tuple(info["shape"]), base + start, end - start)
    return entries


def weight_files(model_dir: str | Path) -> list[Path]:
    """The .safetensors files of a model directory (through the shard index when there is one)."""
    d = Path(model_dir)
    index = d / "model.safetensors.index.json"
    if index.is_file():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [d / n for n in names]
    return sorted(d.glob("*.safetensors"))


def tensor_index(model_dir: str | Path) -> dict[str, TensorEntry]:
    entries: dict[str, TensorEntry] = {}
    for f in weight_files(model_dir):
        entries.update(read_header(f))
    return entries


@dataclass(frozen=True)
class CheckpointSummary:
    parameters: int  # elements of all floating-point tensors stored
    stored_dtype: str  # float32 | bfloat16 | float16: the dtype most parameters are stored in
    stored_bytes: int  # bytes of all tensors on disk
    linear_parameters: int  # elements of the 2-D weights of linear layers (what int8 quantises)
    tied_head_parameters: int  # an output layer that shares the embedding (int8 keeps its own copy)

    def weight_bytes(self, dtype: str) -> int:
        """Bytes the weights take in memory when loaded in `dtype`."""
        if dtype == "int8":
            # Linear weights as int8 (plus a float32 scale per row: a small fraction), the rest float32.
            linear = self.linear_parameters + self.tied_head_parameters
            return linear + 4 * (self.parameters - self.linear_parameters)
        return self.parameters * {"float32": 4, "bfloat16": 2, "float16": 2}[dtype]


def summarize_checkpoint(model_dir: str | Path) -> CheckpointSummary:
    entries = tensor_index(model_dir)
    floating = [e for e in entries.values() if e.dtype in DTYPE_NAMES]
    by_dtype = Counter()
    for e in floating:
        by_dtype[e.dtype] += e.numel
    stored = DTYPE_NAMES[by_dtype.most_common(1)[0][0]] if by_dtype else "float32"
    return CheckpointSummary(
        parameters=sum(e.numel for e in floating),
        stored_dtype=stored,
        stored_bytes=sum(e.nbytes for e in entries.values()),
        linear_parameters=sum(e.numel for n, e in entries.items() if e in floating and is_linear_weight(n, e)),
        tied_head_parameters=0 if any("lm_head" in n for n in entries) else max(
            (e.numel for n, e in entries.items() if _EMBEDDING.search(n)), default=0),
    )


def summarize_model(source: str | Path) -> CheckpointSummary:
    """The summary of a model directory's safetensors, or of a GGUF file's tensors. A GGUF model
    is dequantised into fresh memory, so its stored_dtype is the GGML type (Q8_0, F16, ...),
    never a compute dtype: its weights are never shared between workers."""
    from pipelines.models.gguf_file import is_gguf_file, read_gguf_model

    if not is_gguf_file(source):
        return summarize_checkpoint(source)
    gguf = read_gguf_model(source)
    return CheckpointSummary(
        parameters=gguf.parameters,
        stored_dtype=gguf.main_tensor_type,
        stored_bytes=gguf.path.stat().st_size,
        linear_parameters=gguf.linear_parameters,
        tied_head_parameters=0 if gguf.has_output_tensor else gguf.embedding_parameters,
    )


# Embedding tables are looked up, not multiplied: int8 leaves them in float32.
_EMBEDDING = re.compile(r"(embed_tokens|wte|wpe|word_embeddings|embeddings)\.weight$")


def is_linear_weight(name: str, entry: TensorEntry) -> bool:
    return len(entry.shape) == 2 and name.endswith(".weight") and not _EMBEDDING.search(name)
