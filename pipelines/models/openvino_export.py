"""Exporting a safetensors model to an OpenVINO IR directory, once per model and format.

The exporter, optimum-intel, pins a transformers release older than the pipeline's, so it runs in
a virtual environment of its own, which this module builds on first use from CPU wheels only: the
pipeline's own torch build and openvino release, then optimum-intel without torchvision (which
optimum-intel lists for image models; pip would resolve it to a CUDA torch). Only the driver
exports; workers run the export with openvino-genai alone.

An export is kept in a cache directory under the source model's fingerprint (models.fingerprint)
and the format, so a changed model is exported again and an unchanged one never is. It is
written into a staging directory and renamed into place, with `export.json` last: a directory
without it (an interrupted export) is never used. Nothing here imports Spark or torch.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from pipelines.models.fingerprint import model_fingerprint
from pipelines.models.locations import ModelSourceError

log = logging.getLogger("pipelines.export")

# model.export -> optimum-cli's --weight-format
EXPORT_FORMATS = {"openvino-int8": "int8", "openvino-int4": "int4", "openvino-fp16": "fp16"}
EXPORTER = "optimum-intel==2.2.0"
# optimum-intel 2.2's own requirements, less torchvision (image models only)
EXPORTER_REQUIREMENTS = ("optimum~=2.3.0", "transformers>=4.51,<5.6", "huggingface-hub>=0.23.2,<1.22",
                         "nncf>=3.3,<4", "requests>=2.33,<3", "setuptools")
MARKER = "export.json"
# The pipeline tokenises with the source's own tokenizer files: the exporter re-saves them and can
# drop parts (StarCoder2's one-digit-per-token pre-tokenizer), so the originals win.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
DEFAULT_CACHE = Path.home() / ".cache" / "starcoder-pipelines"


def _release(package: str) -> str:
    """The installed version of `package` without a local label (2.13.0+cpu -> 2.13.0)."""
    return importlib.metadata.version(package).split("+")[0]


def exporter_pins() -> list[str]:
    """What the exporter environment is built from: this environment's torch and openvino releases."""
    return [f"torch=={_release('torch')}", f"openvino=={_release('openvino')}",
            f"openvino-tokenizers=={_release('openvino-tokenizers')}"]


def exporter_venv() -> Path:
    """The exporter's virtual environment (STARCODER_EXPORTER_VENV, else one per set of pins under
    ~/.cache/starcoder-pipelines), built on first use."""
    pins = exporter_pins()
    named = os.environ.get("STARCODER_EXPORTER_VENV")
    tag = "-".join(p.split("==")[1] for p in pins[:2])
    venv = Path(named) if named else DEFAULT_CACHE / f"openvino-exporter-{tag}"
    if (venv / MARKER).is_file():
        return venv
    # Built where it stays (a virtual environment's scripts name its path), with its marker last: a
    # build that stopped halfway has none and is built again.
    shutil.rmtree(venv, ignore_errors=True)
    log.info("building the OpenVINO exporter environment in %s (once; CPU wheels only)", venv)
    started = time.time()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    try:
        constraints = venv / "constraints.txt"
        constraints.write_text("\n".join(pins) + "\n")
        subprocess.run(pip + pins, check=True, capture_output=True, text=True)  # torch first: pip keeps its build
        subprocess.run(pip + ["--no-deps", EXPORTER], check=True, capture_output=True, text=True)
        subprocess.run(pip + ["-c", str(constraints), *EXPORTER_REQUIREMENTS], check=True, capture_output=True,
                       text=True)
    except subprocess.CalledProcessError as e:
        raise ModelSourceError(
            f"could not build the OpenVINO exporter environment in {venv} ({' '.join(e.cmd[6:])} failed: "
            f"{(e.stderr or '').strip()[-600:]}). It needs the package index (pip); where there is none, build it on a "
            "machine that has one (STARCODER_EXPORTER_VENV names where), or export there and point model.source at the export"
        ) from None
    (venv / MARKER).write_text(json.dumps({"pins": pins, "exporter": EXPORTER,
                                           "seconds": round(time.time() - started)}) + "\n")
    log.info("exporter environment built in %.0fs", time.time() - started)
    return venv


def int4_group_size(source: str | Path) -> int:
    """The exporter's int4 group (weights sharing one scale): 128 as its default, else the largest of
    64, 32 that divides every layer's input width (SmolLM2-135M's 576), else one group per row (-1)."""
    config = json.loads((Path(source) / "config.json").read_text())
    widths = [config.get(k) for k in ("hidden_size", "intermediate_size", "n_embd", "n_inner") if config.get(k)]
    return next((g for g in (128, 64, 32) if all(w % g == 0 for w in widths)), -1)


def export_openvino(source: str | Path, dest: str | Path, weights: str) -> Path:
    """Export the model directory `source` to `dest` with `weights` (int8, int4, fp16, fp32)."""
    venv = exporter_venv()
    env = {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
    group = ["--group-size", str(int4_group_size(source))] if weights == "int4" else []
    result = subprocess.run([str(venv / "bin" / "python"), "-m", "optimum.commands.optimum_cli", "export",
                             "openvino", "--model", str(source), "--task", "text-generation-with-past",
                             "--weight-format", weights, *group, str(dest)],
                            capture_output=True, text=True, env=env)
    if result.returncode != 0:
        output = (result.stderr or result.stdout).strip()
        error = output[output.find("Error: "):] if "Error: " in output else output[-800:]  # the exception, not the traceback
        raise ModelSourceError(f"exporting {source} to OpenVINO ({weights} weights) failed: {error[:800]}")
    for name in TOKENIZER_FILES:
        if (Path(source) / name).is_file():
            shutil.copy(Path(source) / name, Path(dest) / name)
    return Path(dest)


def cached_export(source: str | Path, export: str, cache_dir: str | Path | None = None) -> str:
    """The OpenVINO export of the model directory `source` in format `export` (a key of
    EXPORT_FORMATS): from `cache_dir` when it holds one of this model, else made there now."""
    if export not in EXPORT_FORMATS:
        raise ModelSourceError(f"model.export must be one of {', '.join(EXPORT_FORMATS)}, got {export!r}")
    cache = Path(cache_dir) if cache_dir else DEFAULT_CACHE / "exports"
    fingerprint = model_fingerprint(source)
    target = cache / f"{fingerprint[:32]}-{export}"
    if (target / MARKER).is_file():
        log.info("%s: the %s export of this model is in %s", source, export, target)
        return str(target)
    cache.mkdir(parents=True, exist_ok=True)
    staging = cache / f".{target.name}.{os.getpid()}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    log.info("%s: exporting to OpenVINO (%s) into %s, once for this model", source, export, target)
    started = time.time()
    try:
        export_openvino(source, staging, EXPORT_FORMATS[export])
        (staging / MARKER).write_text(json.dumps({
            "source": str(source), "source_fingerprint": fingerprint, "export": export, "exporter": EXPORTER,
            "seconds": round(time.time() - started, 1)}) + "\n")
        if (target / MARKER).is_file():  # another driver finished the same export first
            shutil.rmtree(staging)
        else:
            shutil.rmtree(target, ignore_errors=True)  # an interrupted export's leftovers
            staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("%s: exported in %.0fs", source, time.time() - started)
    return str(target)


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Export a model directory (safetensors) to an OpenVINO IR directory "
                                                 "for engine openvino, in the exporter environment this builds once.")
    parser.add_argument("source")
    parser.add_argument("dest")
    parser.add_argument("weights", nargs="?", default="int8", choices=("fp32", "fp16", "int8", "int4"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    export_openvino(args.source, args.dest, args.weights)
    print(f"exported {args.source} -> {args.dest} ({args.weights} weights)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
