#!/usr/bin/env bash
# Export a StarCoder2 model directory (safetensors) to an OpenVINO IR directory for backend=openvino.
#
#   bash scripts/export_openvino.sh SOURCE_DIR DEST_DIR [fp32|fp16|int8|int4]
#
# The exporter (optimum-intel) needs a transformers release older than the one the pipeline
# runs with, so it lives in its own virtual environment (EXPORT_VENV, created on first use).
# Only the export needs it: workers run the exported directory with openvino-genai alone.
set -euo pipefail
if [ $# -lt 2 ]; then
    sed -n '2,8p' "$0"; exit 2
fi
SOURCE="$1"; DEST="$2"; WEIGHTS="${3:-int8}"
VENV="${EXPORT_VENV:-$HOME/.cache/starcoder-pipelines/openvino-export-venv}"
if [ ! -x "$VENV/bin/optimum-cli" ]; then
    python3 -m venv "$VENV"
    # torch first and pinned, as for the pipeline, then the exporter and the runtime it targets.
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "torch==2.13.0"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "optimum-intel[openvino]==2.2.0" "openvino-genai==2026.4.1.0"
fi
HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" "$VENV/bin/optimum-cli" export openvino \
    --model "$SOURCE" --task text-generation-with-past --weight-format "$WEIGHTS" "$DEST"
# The pipeline tokenises with the source's own tokenizer.json: the exporter re-saves it and can
# drop parts of it (StarCoder2's one-digit-per-token pre-tokenizer), so the originals win.
for f in tokenizer.json tokenizer_config.json special_tokens_map.json; do
    if [ -e "$SOURCE/$f" ]; then cp "$SOURCE/$f" "$DEST/$f"; fi
done
echo "exported $SOURCE -> $DEST ($WEIGHTS weights)"
