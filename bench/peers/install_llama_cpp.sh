#!/usr/bin/env bash
# Builds llama.cpp's llama-server and llama-quantize for the peers benchmark, from the llama.cpp
# sources that the llama-cpp-python sdist carries (PyPI is reachable where GitHub may not be).
# Native CPU flags: the server is measured on the machine that builds it, as its users run it.
# Usage: bash bench/peers/install_llama_cpp.sh   -> bench/peers/.llama.cpp/bin/{llama-server,llama-quantize}
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
version="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
dest="$here/.llama.cpp"
if [[ -x "$dest/bin/llama-server" && -x "$dest/bin/llama-quantize" ]]; then
  echo "$dest/bin"; exit 0
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -m pip download -q --no-deps "llama-cpp-python==$version" -d "$work"
tar -xzf "$work"/llama_cpp_python-"$version".tar.gz -C "$work"
src="$work/llama_cpp_python-$version/vendor/llama.cpp"
cmake -S "$src" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF \
  -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF >/dev/null
cmake --build "$work/build" --target llama-server llama-quantize -j "$(nproc)"
mkdir -p "$dest/bin"
cp "$work/build/bin/llama-server" "$work/build/bin/llama-quantize" "$dest/bin/"
echo "llama-cpp-python $version (llama.cpp sources)" > "$dest/VERSION"
echo "$dest/bin"
