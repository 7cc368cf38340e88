"""Where a model comes from: hub ids, local and DBFS directories, GGUF files and Ollama's model
store (Spark NLP's model names: models.pretrained).

Resolution happens on the driver before any task starts, so that a wrong name or an
unreachable hub fails the job at once with a message that says what to do instead.
Nothing here imports Spark or torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pipelines.models.families import UnsupportedModelError, family_for, standard_config
from pipelines.models.gguf_file import GgufFileError, is_gguf_file, read_gguf_model
from pipelines.models.locations import ModelSourceError, to_local_path
from pipelines.models.ollama_store import is_ollama_name, resolve_ollama_model

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")
OPENVINO_MODEL_FILES = ("openvino_model.xml", "openvino_model.bin")  # an OpenVINO IR export
PICKLE_WEIGHT_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.ckpt", "tf_model.h5")
# What a hub download fetches: config, tokenizer and safetensors weights, or an OpenVINO export's IR
# files (never pickles: *.bin alone would match them).
_HUB_FILES = ["*.json", "*.safetensors", "*.txt", "openvino_*.xml", "openvino_*.bin"]


@dataclass(frozen=True)
class ResolvedModel:
    # a local directory holding config.json, weights (safetensors or an OpenVINO export) and
    # tokenizer.json, or a GGUF file (an Ollama model resolves to its GGUF blob)
    path: str
    dtype: str = "auto"
    note: str = ""  # what runs, in words for the log, where the name alone does not say it


def looks_like_hub_id(location: str) -> bool:
    parts = location.split("/")
    return (
        len(parts) == 2
        and all(parts)
        and not location.startswith((".", "/", "~"))
        and ":" not in location
        and not location.endswith(".gguf")
        and not Path(location).exists()
    )


def is_openvino_dir(path: str | Path) -> bool:
    """True for a directory holding an OpenVINO IR export (scripts/export_openvino.sh)."""
    return all((Path(path) / f).is_file() for f in OPENVINO_MODEL_FILES)


def has_safetensors(path: str | Path) -> bool:
    d = Path(path)
    return any((d / f).is_file() for f in WEIGHT_FILES) or bool(list(d.glob("*.safetensors")))


def model_forms(source: str | Path) -> tuple[str, ...]:
    """What a resolved model path holds, as the engine's backends name it: "gguf" for a GGUF
    file; "safetensors" and/or "openvino" for a directory (its weights, an OpenVINO export)."""
    if is_gguf_file(source):
        return ("gguf",)
    return tuple(form for form, held in (("safetensors", has_safetensors(source)), ("openvino", is_openvino_dir(source)))
                 if held)


def validate_model_dir(path: str | Path) -> Path:
    """Check that a directory is a causal LM of a family the engine drives, with a tokenizer and
    safetensors weights or an OpenVINO IR export."""
    d = Path(path)
    if not d.exists():
        raise ModelSourceError(
            f"model directory {d} does not exist. Point loadSavedModel / model.source at a local, "
            "DBFS (dbfs:/... or /dbfs/...) or Unity Catalog volume directory holding a Hugging Face "
            "model (config.json, *.safetensors, tokenizer.json), a .gguf file, or ollama:NAME[:TAG]"
        )
    if not d.is_dir():
        raise ModelSourceError(
            f"model path {d} is a file but not a GGUF model; expected a Hugging Face model directory or a .gguf file"
        )
    config_path = d / "config.json"
    if not config_path.is_file():
        raise ModelSourceError(f"{d} has no config.json: it is not a Hugging Face model directory")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as e:
        raise ModelSourceError(f"{config_path} is not valid JSON: {e}") from e
    try:
        family_for(config.get("model_type"), str(config_path))
    except UnsupportedModelError as e:
        raise ModelSourceError(str(e)) from e
    if config.get("auto_map"):
        raise ModelSourceError(
            f"{config_path} names its own model code (auto_map), which would run with trust_remote_code and is "
            "refused; use a model whose architecture transformers ships"
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
            f"{d} has no tokenizer.json; copy the model's tokenizer files next to the weights "
            "(pipelines/assets/starcoder2-tokenizer holds StarCoder2's)"
        )
    return d


def validate_gguf(path: str | Path, named_as: str | None = None) -> Path:
    """Check that a GGUF file is a whole model file of a family the engine drives."""
    try:
        read_gguf_model(str(path))
    except (GgufFileError, UnsupportedModelError) as e:
        raise ModelSourceError(f"{named_as}: {e}" if named_as else str(e)) from e
    return Path(path)


def validate_model_source(path: str | Path) -> Path:
    """A resolved local model: a GGUF file or a model directory, checked."""
    return validate_gguf(path) if is_gguf_file(path) or str(path).endswith(".gguf") else validate_model_dir(path)


def model_config(source: str | Path) -> dict:
    """The model's config as a dict (config.json, or what a GGUF file's keys say), with the
    sizes under the standard names (models.families.standard_config)."""
    if is_gguf_file(source):
        return standard_config(read_gguf_model(str(source)).config)
    return standard_config(json.loads((Path(source) / "config.json").read_text()))


def download_from_hub(repo_id: str) -> str:
    """Fetch (or find in the local cache) a hub model's config, tokenizer and weights (safetensors or
    an OpenVINO export)."""
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
    """Turn a directory, DBFS/volume path, GGUF file, ollama:NAME[:TAG] or hub id into a
    validated local model directory or GGUF file."""
    if is_ollama_name(location):
        return ResolvedModel(path=str(validate_gguf(resolve_ollama_model(location), named_as=location)), dtype=dtype)
    local = to_local_path(location)
    if looks_like_hub_id(local):
        local = download_from_hub(local)
    return ResolvedModel(path=str(validate_model_source(local)), dtype=dtype)
