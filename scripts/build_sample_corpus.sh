#!/usr/bin/env bash
# Rebuild the bundled sample corpus (pipelines/assets/sample-corpus): the 164 HumanEval prompts
# plus functions from ten Python standard-library modules that the demo model was not trained on.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
stdlib=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')
src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
for module in bisect colorsys difflib fnmatch glob heapq shlex statistics string textwrap; do
  cp "$stdlib/$module.py" "$src/"
done
out=pipelines/assets/sample-corpus
rm -rf "$out"
"$PYTHON" jobs/prepare_corpus.py --source-dir "$src" --glob '*.py' --humaneval --fim-per-file 6 --out "$out" --master 'local[2]'
find "$out" \( -name '.*.crc' -o -name '_SUCCESS' \) -delete
