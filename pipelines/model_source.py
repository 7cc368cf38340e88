"""Where a model comes from: Spark NLP model names, hub ids, local and DBFS directories.

Resolution happens on the driver before any task starts, so that a wrong name or an
unreachable hub fails the job at once with a message that says what to do instead.
Nothing here imports Spark or torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

# Spark NLP's published StarCoder2 names -> the weights they were exported from.
# Spark NLP ships these as OpenVINO/ONNX int8/int4 exports; here the same weights run in
# PyTorch, int8 through dynamic quantisation. There is no int4 CPU kernel in PyTorch, so the
# int4 name runs int8 weights: the closest precision available.
PRETRAINED_MODELS = {
    "starcoder2_3b_int8": ("bigcode/starcoder2-3b", "int8"),
    "starcoder2_3b_int4": ("bigcode/starcoder2-3b", "int8"),
    "starcoder2_3b": ("bigcode/starcoder2-3b", "auto"),
    "starcoder2_7b": ("bigcode/starcoder2-7b", "auto"),
    "starcoder2_15b": ("bigcode/starcoder2-15b", "auto"),
}
DEFAULT_PRETRAINED = "starcoder2_3b_int4"  # Spark NLP's Python default

SUPPORTED_MODEL_TYPES = ("starcoder2",)
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")
OPENVINO_MODEL_FILES = ("openvino_model.xml", "openvino_model.bin")  # an OpenVINO IR export
PICKLE_WEIGHT_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.ckpt", "tf_model.h5")
_HUB_FILES = ["*.json", "*.safetensors", "*.txt"]


class ModelSourceError(ValueError):
    """A model directory or name cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class ResolvedModel:
    path: str  # a local directory holding config.json, safetensors weights and tokenizer.json
    dtype: str = "auto"


def to_local_path(location: str) -> str:
    """Map DBFS URIs to their FUSE mount (what Python on a Databricks worker can open)."""
    if location.startswith("dbfs:/"):
        return "/dbfs/" + location[len("dbfs:/"):].lstrip("/")
    if location.startswith("file:"):
        return location[len("file:"):] if not location.startswith("file://") else location[len("file://"):]
    return location


def looks_like_hub_id(location: str) -> bool:
    parts = location.split("/")
    return (
        len(parts) == 2
        and all(parts)
        and not location.startswith((".", "/", "~"))
        and ":" not in location
        and not Path(location).exists()
    )


def is_openvino_dir(path: str | Path) -> bool:
    """True for a directory holding an OpenVINO IR export (scripts/export_openvino.sh)."""
    return all((Path(path) / f).is_file() for f in OPENVINO_MODEL_FILES)


def has_safetensors(path: str | Path) -> bool:
    d = Path(path)
    return any((d / f).is_file() for f in WEIGHT_FILES) or bool(list(d.glob("*.safetensors")))


def engine_for(source: str, engine: str = "auto") -> str:
    """The engine a model directory runs with: `engine`, or by what the directory holds
    (pytorch when it has safetensors weights, openvino when it has only an OpenVINO export)."""
    if engine == "openvino" and not is_openvino_dir(source):
        raise ModelSourceError(
            f"engine 'openvino' needs an OpenVINO export in {source} (openvino_model.xml); "
            "make one with: bash scripts/export_openvino.sh SOURCE_DIR DEST_DIR int8"
        )
    if engine == "pytorch" and not has_safetensors(source):
        raise ModelSourceError(
            f"engine 'pytorch' needs *.safetensors weights in {source}; it holds an OpenVINO export: "
            "use engine 'openvino' (setEngine('openvino'), model.engine: openvino)"
        )
    if engine != "auto":
        return engine
    return "openvino" if is_openvino_dir(source) and not has_safetensors(source) else "pytorch"


def validate_model_dir(path: str | Path) -> Path:
    """Check that a directory is a StarCoder2 causal LM with a tokenizer and safetensors weights
    or an OpenVINO IR export."""
    d = Path(path)
    if not d.exists():
        raise ModelSourceError(
            f"model directory {d} does not exist. Point loadSavedModel / model.source at a local, "
            "DBFS (dbfs:/... or /dbfs/...) or Unity Catalog volume directory holding a Hugging Face "
            "StarCoder2 model (config.json, *.safetensors, tokenizer.json)"
        )
    if not d.is_dir():
        raise ModelSourceError(f"model path {d} is a file; expected a Hugging Face model directory")
    config_path = d / "config.json"
    if not config_path.is_file():
        raise ModelSourceError(f"{d} has no config.json: it is not a Hugging Face model directory")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as e:
        raise ModelSourceError(f"{config_path} is not valid JSON: {e}") from e
    model_type = config.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ModelSourceError(
            f"{config_path}: model_type is {model_type!r}; this pipeline runs StarCoder2 causal "
            f"language models (model_type {SUPPORTED_MODEL_TYPES[0]!r})"
        )
    if not has_safetensors(d) and not is_openvino_dir(d):
        pickles = [f for f in PICKLE_WEIGHT_FILES if (d / f).exists()]
        if pickles:
            raise ModelSourceError(
                f"{d} holds only pickle weights ({', '.join(pickles)}), which can run arbitrary code "
                "when loaded and are refused. Convert them to safetensors "
                "(model.save_pretrained(dir, safe_serialization=True)) and point at that directory"
            )
        raise ModelSourceError(
            f"{d} has no *.safetensors weights (expected {WEIGHT_FILES[0]}) and no OpenVINO export "
            f"({OPENVINO_MODEL_FILES[0]})"
        )
    if not (d / "tokenizer.json").is_file():
        raise ModelSourceError(
            f"{d} has no tokenizer.json; copy the StarCoder2 tokenizer files next to the weights "
            "(pipelines/assets/starcoder2-tokenizer holds them)"
        )
    return d


def download_from_hub(repo_id: str) -> str:
    """Fetch (or find in the local cache) a hub model's safetensors, config and tokenizer files."""
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(repo_id, allow_patterns=_HUB_FILES, etag_timeout=10)
    except Exception as e:  # offline, unknown repo, no network: all answered the same way
        raise ModelSourceError(
            f"could not get model {repo_id!r} from the Hugging Face hub ({type(e).__name__}: {e}). "
            "Without network access, download the model elsewhere and point at its directory instead: "
            "StarCoderTransformer.loadSavedModel('/path/or/dbfs:/path/to/starcoder2-3b', spark), "
            "or model.source in the job config"
        ) from e


def resolve_model(location: str, dtype: str = "auto") -> ResolvedModel:
    """Turn a directory, DBFS path or hub id into a validated local model directory."""
    local = to_local_path(location)
    if looks_like_hub_id(local):
        local = download_from_hub(local)
    return ResolvedModel(path=str(validate_model_dir(local)), dtype=dtype)


def resolve_pretrained(name: str, lang: str = "en", remote_loc: str | None = None) -> ResolvedModel:
    """Resolve a Spark NLP model name (or a hub id) the way `pretrained()` does."""
    if lang != "en":
        raise ModelSourceError(f"StarCoder2 models are published for lang='en' only, got lang={lang!r}")
    hub_id, dtype = PRETRAINED_MODELS.get(name, (name, "auto"))
    if remote_loc:
        # A mirror of the models: remote_loc/<name> or remote_loc/<hub id>.
        base = to_local_path(remote_loc).rstrip("/")
        for candidate in (f"{base}/{name}", f"{base}/{hub_id}"):
            if Path(candidate).is_dir():
                return ResolvedModel(path=str(validate_model_dir(candidate)), dtype=dtype)
        raise ModelSourceError(
            f"remote_loc {remote_loc!r} holds neither {name!r} nor {hub_id!r} as a model directory"
        )
    if name not in PRETRAINED_MODELS and not looks_like_hub_id(name):
        known = ", ".join(sorted(PRETRAINED_MODELS))
        raise ModelSourceError(f"unknown pretrained model {name!r}; known names: {known}, or a hub id 'org/name'")
    return ResolvedModel(path=str(validate_model_dir(download_from_hub(hub_id))), dtype=dtype)

