"""What users would otherwise write, measured against the pipeline.

1. naive: the model card's usage (tokenizer + `model.generate` on one prompt at a time) inside a
   pandas UDF, the model loaded once per Python worker;
2. expert: `pyspark.ml.functions.predict_batch_udf` with Hugging Face batched `generate`
   (left padding, attention mask), as the pyspark docs show for transformers models.

Both load the model with plain transformers (fp32 on CPU) and decode greedily. The per-worker
model cache lives in this module so that Spark ships a reference, not a copy, to each task.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

_cache: dict = {}
RESULT_SCHEMA = "texts array<string>, tokens int"


def load_hf(model_dir: str, padding_side: str = "right"):
    key = (model_dir, padding_side)
    if key not in _cache:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.set_num_threads(1)  # one task per core, as the pipeline runs
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        tokenizer.padding_side = padding_side
        tokenizer.pad_token = tokenizer.eos_token
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        model.eval()
        _cache[key] = (tokenizer, model)
    return _cache[key]


def new_token_counts(new_tokens, eos_id: int) -> list[int]:
    """Generated tokens per row up to and including the first EOS (what was really generated)."""
    counts = []
    for row in new_tokens.tolist():
        counts.append(row.index(eos_id) + 1 if eos_id in row else len(row))
    return counts


def hf_generate(tokenizer, model, prompts: list[str], max_new_tokens: int, n: int = 1, stop_strings=None,
                **sampling):
    """transformers' generate on a (left-padded) batch: n texts per prompt and the tokens generated.

    Greedy unless sampling settings are given; stop_strings end a row as the pipeline's do.
    """
    import torch

    enc = tokenizer(prompts, return_tensors="pt", padding=True)
    extra = {"stop_strings": list(stop_strings), "tokenizer": tokenizer} if stop_strings else {}
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=bool(sampling), num_return_sequences=n,
                             pad_token_id=tokenizer.eos_token_id, **extra, **sampling)
    new = out[:, enc["input_ids"].shape[1]:]
    texts = tokenizer.batch_decode(new, skip_special_tokens=True)
    counts = new_token_counts(new, tokenizer.eos_token_id)
    return [texts[i * n:(i + 1) * n] for i in range(len(prompts))], [sum(counts[i * n:(i + 1) * n]) for i in range(len(prompts))]


def hf_batched_generate(tokenizer, model, prompts: list[str], max_new_tokens: int):
    """Greedy batched generate: (first text per prompt, tokens generated per prompt)."""
    texts, tokens = hf_generate(tokenizer, model, prompts, max_new_tokens)
    return [t[0] for t in texts], tokens


def naive_udf(model_dir: str, max_new_tokens: int, **generate_settings):
    """The model card's usage: one prompt at a time (n samples of it in one call)."""
    from pyspark.sql.functions import pandas_udf

    @pandas_udf(RESULT_SCHEMA)
    def generate(prompts: pd.Series) -> pd.DataFrame:
        tokenizer, model = load_hf(model_dir)
        texts, tokens = [], []
        for prompt in prompts:
            (row,), (count,) = hf_generate(tokenizer, model, [prompt], max_new_tokens, **generate_settings)
            texts.append(row)
            tokens.append(count)
        return pd.DataFrame({"texts": texts, "tokens": tokens})

    return generate


def predict_batch_udf_generate(model_dir: str, max_new_tokens: int, batch_size: int, **generate_settings):
    from pyspark.ml.functions import predict_batch_udf
    from pyspark.sql.types import (
        ArrayType,
        IntegerType,
        StringType,
        StructField,
        StructType,
    )

    def make_predict_fn():
        tokenizer, model = load_hf(model_dir, padding_side="left")

        def predict(prompts: np.ndarray) -> dict:
            texts, tokens = hf_generate(tokenizer, model, [str(p) for p in prompts], max_new_tokens,
                                        **generate_settings)
            return {"texts": np.array(texts, dtype=object), "tokens": np.array(tokens, dtype=np.int32)}

        return predict

    return predict_batch_udf(
        make_predict_fn,
        return_type=StructType([StructField("texts", ArrayType(StringType())), StructField("tokens", IntegerType())]),
        batch_size=batch_size,
    )
