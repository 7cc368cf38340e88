"""A GGUF model file (llama.cpp, Ollama) as the pipeline sees it, from its header alone.

The driver validates the file here before any task starts: it is GGUF, whole, of an
architecture the engine drives, with tensor types it can dequantise. The model's config
comes from the file's own keys, through transformers' GGUF key table plus what that table
leaves out (transformers 5.24 drops StarCoder2's rope.freq_base and has no sliding window:
a StarCoder2 GGUF loaded as is computes with the wrong rotary base and full attention).
Nothing here imports torch; the GGUF reader maps the file, it does not read the weights.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from pipelines.models.families import ModelFamily, family_for_gguf

GGUF_MAGIC = b"GGUF"
# The tensor dimension gguf lists first is the innermost one: a linear layer's weight of
# shape (out, in) in PyTorch has GGUF shape [in, out].
EMBEDDING_TENSOR = "token_embd.weight"
OUTPUT_TENSOR = "output.weight"
# Keys every family's GGUF may carry that transformers' table does not map for all of them.
EXTRA_CONFIG_KEYS = {
    "rope.freq_base": "rope_theta",
    "attention.sliding_window": "sliding_window",
    "context_length": "max_position_embeddings",
}


class GgufFileError(ValueError):
    """A GGUF file cannot be used; the message names the file and what to do."""


def is_gguf_file(path: str | Path) -> bool:
    """True for a file that starts with GGUF's magic (Ollama's blobs have no .gguf suffix)."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            return p.is_file() and f.read(4) == GGUF_MAGIC
    except OSError:
        return False


def supported_tensor_types() -> frozenset[str]:
    from gguf import quants

    return frozenset({"F32", "F16"} | {t.name for t in quants._type_traits})


@dataclass(frozen=True)
class GgufModel:
    path: Path
    architecture: str  # general.architecture
    family: ModelFamily
    config: dict  # keyword arguments of the family's transformers config class
    tensor_types: dict  # GGML type name -> number of tensors
    parameters: int  # elements of all tensors
    linear_parameters: int  # elements of the 2-D weights other than the embedding
    embedding_parameters: int
    has_output_tensor: bool  # False: the output layer shares the embedding

    @property
    def main_tensor_type(self) -> str:
        return max(self.tensor_types, key=self.tensor_types.get)


def open_reader(path: str | Path):
    """gguf's reader over the file, or a GgufFileError naming it. One per file and process:
    parsing a header with a 49k-token vocabulary takes seconds; the tensors stay mapped."""
    return _open_reader(*_file_version(path))


def _file_version(path: str | Path) -> tuple[str, int, int]:
    """(path, size, mtime) as the key of per-file caches: a file replaced in place is read again."""
    p = Path(path)
    stat = p.stat() if p.is_file() else None
    return str(p), stat.st_size if stat else -1, stat.st_mtime_ns if stat else -1


@lru_cache(maxsize=4)
def _open_reader(path: str, size: int, mtime_ns: int):
    from gguf import GGUFReader

    p = Path(path)
    if not p.is_file():
        raise GgufFileError(f"GGUF file {p} does not exist; point model.source / loadSavedModel at a .gguf file")
    if not is_gguf_file(p):
        raise GgufFileError(f"{p} is not a GGUF file (it does not start with 'GGUF'); expected a llama.cpp/Ollama .gguf model")
    try:
        return GGUFReader(str(p))
    except Exception as e:  # the reader fails with numpy errors on a short or damaged file
        raise GgufFileError(
            f"{p} cannot be read as GGUF ({type(e).__name__}: {e}): the file is truncated or corrupt. "
            "Copy or download it again (for Ollama: ollama pull NAME:TAG)"
        ) from e


def field(reader, key: str, default=None):
    return reader.fields[key].contents() if key in reader.fields else default


def read_gguf_model(path: str | Path) -> GgufModel:
    """Validate a GGUF model file and describe it (once per file and process: the driver asks often)."""
    return _read_gguf_model(*_file_version(path))


@lru_cache(maxsize=8)
def _read_gguf_model(path: str, size: int, mtime_ns: int) -> GgufModel:
    reader = open_reader(path)
    p = Path(path)
    architecture = field(reader, "general.architecture")
    if architecture is None:
        raise GgufFileError(f"{p} has no general.architecture key: it is a vocabulary or adapter file, not a model")
    family = family_for_gguf(architecture, str(field(reader, "general.name", "")), str(p))
    if not reader.tensors:
        raise GgufFileError(f"{p} holds no tensors: it is a vocabulary-only GGUF, not a model")

    supported = supported_tensor_types()
    types = Counter(t.tensor_type.name for t in reader.tensors)
    unsupported = sorted(set(types) - supported)
    if unsupported:
        raise GgufFileError(
            f"{p} has tensors of type {', '.join(unsupported)}, which gguf {_gguf_version()} cannot dequantise; "
            f"types that load: {', '.join(sorted(supported))}. Use another quantisation of the model (Q8_0, Q4_K_M, F16)"
        )
    size = p.stat().st_size
    for t in reader.tensors:
        if t.data_offset + t.n_bytes > size:
            raise GgufFileError(f"{p} is truncated: tensor {t.name} ends at byte {t.data_offset + t.n_bytes}, "
                                f"the file has {size}. Copy or download it again")
    return GgufModel(
        path=p, architecture=architecture, family=family, config=model_config(reader, architecture, family),
        tensor_types=dict(types), parameters=sum(int(t.n_elements) for t in reader.tensors),
        linear_parameters=sum(int(t.n_elements) for t in reader.tensors
                              if len(t.shape) == 2 and t.name != EMBEDDING_TENSOR),
        embedding_parameters=sum(int(t.n_elements) for t in reader.tensors if t.name == EMBEDDING_TENSOR),
        has_output_tensor=any(t.name == OUTPUT_TENSOR for t in reader.tensors),
    )


def model_config(reader, architecture: str, family: ModelFamily) -> dict:
    """The family's transformers config, from the file's keys: transformers' key table for the
    architecture, the keys it leaves out, then the family's own settings the file lacks."""
    from transformers.integrations.ggml import GGUF_CONFIG_MAPPING

    renames = dict(EXTRA_CONFIG_KEYS)
    renames.update({k: v for k, v in GGUF_CONFIG_MAPPING.get(family.model_type, {}).items() if v is not None})
    config = {"model_type": family.model_type}
    for key, name in renames.items():
        value = field(reader, f"{architecture}.{key}")
        if value is not None:
            config[name] = value
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    if "vocab_size" not in config and tokens is not None:
        config["vocab_size"] = len(tokens.data)
    for key in ("bos_token_id", "eos_token_id"):
        value = field(reader, f"tokenizer.ggml.{key}")
        if value is not None:
            config[key] = int(value)
    config["tie_word_embeddings"] = all(t.name != OUTPUT_TENSOR for t in reader.tensors)
    for key, value in family.gguf_config_defaults.items():
        config.setdefault(key, value)
    return config


def _gguf_version() -> str:
    from importlib.metadata import version

    return version("gguf")
