"""Paths to what ships inside the package: the demo model and the sample corpus."""

from pathlib import Path

ASSETS = Path(__file__).resolve().parent.parent / "assets"
DEMO_MODEL = ASSETS / "demo-model"
DEMO_MODEL_OPENVINO = ASSETS / "demo-model-openvino"  # the demo model exported with fp16 weights
SAMPLE_PROMPTS = ASSETS / "sample-corpus" / "prompts.parquet"
SAMPLE_FIM = ASSETS / "sample-corpus" / "fim.parquet"
PREFIX = "bundled:"


def resolve(value: str) -> str:
    """`bundled:demo-model` -> the installed asset's path; anything else unchanged."""
    return str(ASSETS / value[len(PREFIX):]) if value.startswith(PREFIX) else value
