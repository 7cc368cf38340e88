#!/usr/bin/env bash
# Export a StarCoder2 model directory (safetensors) to an OpenVINO IR directory for engine openvino.
#
#   bash scripts/export_openvino.sh SOURCE_DIR DEST_DIR [fp32|fp16|int8|int4]
#
# The exporter (optimum-intel) needs a transformers release older than the one the pipeline runs
# with, so it lives in its own virtual environment, built on first use from CPU wheels only
# (STARCODER_EXPORTER_VENV, else under ~/.cache/starcoder-pipelines). Only the export needs it:
# workers run the exported directory with openvino-genai alone. The jobs do the same with
# model.export: openvino-int8 (exported once per model, kept by its fingerprint).
set -euo pipefail
if [ $# -lt 2 ]; then
    sed -n '2,10p' "$0"; exit 2
fi
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" exec "${PYTHON:-python3}" -m pipelines.models.openvino_export "$@"
