"""Build small StarCoder2-architecture models (and tiny ones of the other families the engine
drives) with the real tokenizer, as Hugging Face directories.

Used by the tests (a tiny random model), by the benchmark (a 111M model) and as the
starting point of the bundled demo model. Same architecture as bigcode/starcoder2-3b:
grouped-query attention, sliding-window attention, biases, GELU-tanh MLP, real vocabulary.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from pipelines.engine.tokenizer import BUNDLED_TOKENIZER_DIR

# bigcode/starcoder2-3b's configuration, for reference and as the defaults below.
STARCODER2_3B = dict(
    vocab_size=49152,
    hidden_size=3072,
    intermediate_size=12288,
    num_hidden_layers=30,
    num_attention_heads=24,
    num_key_value_heads=2,
    max_position_embeddings=16384,
    sliding_window=4096,
    rope_theta=999999.4420358813,
    norm_epsilon=1e-5,
    hidden_act="gelu_pytorch_tanh",
    use_bias=True,
    bos_token_id=0,
    eos_token_id=0,
)

SIZES = {
    # name: (hidden, intermediate, layers, heads, kv_heads, sliding_window)
    "tiny": (64, 256, 2, 4, 2, 64),
    "small": (256, 1024, 4, 8, 2, 1024),
    "bench": (768, 3072, 12, 12, 2, 4096),  # 111M parameters with the real vocabulary
}


def starcoder2_config(size: str = "tiny", **overrides):
    from transformers import Starcoder2Config

    hidden, intermediate, layers, heads, kv_heads, window = SIZES[size]
    settings = dict(STARCODER2_3B)
    settings.update(
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        sliding_window=window,
        pad_token_id=0,
        tie_word_embeddings=True,
    )
    settings.update(overrides)
    return Starcoder2Config(**settings)


def build_random_model(out_dir: str | Path, size: str = "tiny", seed: int = 0, **overrides) -> Path:
    """Initialise a StarCoder2 model with a fixed seed and save it with the bundled tokenizer."""
    import torch
    from transformers import Starcoder2ForCausalLM

    torch.manual_seed(seed)
    model = Starcoder2ForCausalLM(starcoder2_config(size, **overrides))
    return save_model_dir(model, out_dir)


# Tiny configs of the other families the engine drives, with the StarCoder2 vocabulary (so the
# bundled tokenizer fits them): rotary bases and windows other than transformers' defaults.
TINY_FAMILY_CONFIGS = {
    "llama": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, rope_theta=50000.0, tie_word_embeddings=False),
    "qwen2": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, rope_theta=250000.0, tie_word_embeddings=True),
    "mistral": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, rope_theta=20000.0, sliding_window=48, tie_word_embeddings=False),
    "gpt_bigcode": dict(n_embd=64, n_inner=128, n_layer=2, n_head=4, n_positions=4096, multi_query=True),
}


def build_family_model(out_dir: str | Path, model_type: str, seed: int = 0) -> Path:
    """A tiny random model of another family (TINY_FAMILY_CONFIGS) with the StarCoder2 tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(model_type, vocab_size=STARCODER2_3B["vocab_size"], bos_token_id=0,
                                  eos_token_id=0, pad_token_id=0, **TINY_FAMILY_CONFIGS[model_type])
    torch.manual_seed(seed)
    return save_model_dir(AutoModelForCausalLM.from_config(config), out_dir)


def save_model_dir(model, out_dir: str | Path) -> Path:
    """Save weights as safetensors plus config and the StarCoder2 tokenizer files."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.generation_config.pad_token_id = model.config.eos_token_id
    model.save_pretrained(str(out), safe_serialization=True)
    for f in BUNDLED_TOKENIZER_DIR.iterdir():
        shutil.copy(f, out / f.name)
    return out


def parameter_count(model) -> int:
    return sum(p.numel() for p in model.parameters())
