"""Spark NLP's StarCoder2 model names, and what `pretrained(name)` runs for each.

Spark NLP ships `starcoder2_3b_int8` and `starcoder2_3b_int4` as OpenVINO exports; OpenVINO
publishes the same exports on the Hugging Face hub, so those names fetch them and run on the
OpenVINO engine, the faster one on CPUs (the README's benchmarks). Where no installed engine
runs OpenVINO exports, a name falls back to the model's safetensors on PyTorch, in the closest
precision PyTorch has (int8: PyTorch has no int4 CPU kernel), and says so. Nothing here imports
Spark or torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipelines.models.locations import ModelSourceError, to_local_path
from pipelines.models.source import ResolvedModel, download_from_hub, is_openvino_dir, looks_like_hub_id, validate_model_dir


@dataclass(frozen=True)
class PretrainedModel:
    weights: str  # hub id of the model's safetensors
    export: str | None = None  # hub id of the OpenVINO export shipped under this name
    weights_dtype: str = "auto"  # the dtype the safetensors run in, when they run instead of an export


PRETRAINED_MODELS = {
    "starcoder2_3b_int8": PretrainedModel("bigcode/starcoder2-3b", "OpenVINO/starcoder2-3b-int8-ov", "int8"),
    "starcoder2_3b_int4": PretrainedModel("bigcode/starcoder2-3b", "OpenVINO/starcoder2-3b-int4-ov", "int8"),
    "starcoder2_3b": PretrainedModel("bigcode/starcoder2-3b"),
    "starcoder2_7b": PretrainedModel("bigcode/starcoder2-7b"),
    "starcoder2_15b": PretrainedModel("bigcode/starcoder2-15b"),
}
DEFAULT_PRETRAINED = "starcoder2_3b_int4"  # Spark NLP's Python default


def resolve_pretrained(name: str, lang: str = "en", remote_loc: str | None = None,
                       exports_unavailable: str | None = None) -> ResolvedModel:
    """Resolve a Spark NLP model name (or a hub id) the way `pretrained()` does: its OpenVINO export,
    or its safetensors where `exports_unavailable` says why no engine here runs exports. The
    result's `note` says what runs, for the log."""
    if lang != "en":
        raise ModelSourceError(f"StarCoder2 models are published for lang='en' only, got lang={lang!r}")
    if name not in PRETRAINED_MODELS and not looks_like_hub_id(name):
        known = ", ".join(sorted(PRETRAINED_MODELS))
        raise ModelSourceError(f"unknown pretrained model {name!r}; known names: {known}, or a hub id 'org/name'")
    row = PRETRAINED_MODELS.get(name, PretrainedModel(name))
    use_export = row.export is not None and exports_unavailable is None
    hub_id = row.export if use_export else row.weights
    if remote_loc:  # a mirror of the models: remote_loc/<name> or remote_loc/<hub id>
        base = to_local_path(remote_loc).rstrip("/")
        candidates = [f"{base}/{name}", f"{base}/{hub_id}"]
        path = next((c for c in candidates if Path(c).is_dir()), None)
        if path is None:
            raise ModelSourceError(f"remote_loc {remote_loc!r} holds neither {name!r} nor {hub_id!r} as a model directory")
    else:
        path = download_from_hub(hub_id)
    path = str(validate_model_dir(path))
    if is_openvino_dir(path) and exports_unavailable is None:
        return ResolvedModel(path, "auto", f"{name} runs the OpenVINO export {path if remote_loc else hub_id}")
    note = f"{name} runs {hub_id} in {row.weights_dtype}"
    if row.export is not None and exports_unavailable is not None:
        note += (f", not the OpenVINO export {row.export} it is shipped as (the faster engine on CPUs), because "
                 f"{exports_unavailable}")
    return ResolvedModel(path, row.weights_dtype, note)
