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
RESULT_SCHEMA = "text string, tokens int"


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


def naive_udf(model_dir: str, max_new_tokens: int):
    from pyspark.sql.functions import pandas_udf

    @pandas_udf(RESULT_SCHEMA)
    def generate(prompts: pd.Series) -> pd.DataFrame:
        tokenizer, model = load_hf(model_dir)
        texts, tokens = [], []
        for prompt in prompts:
            inputs = tokenizer(prompt, return_tensors="pt")
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.eos_token_id)
            new = out[:, inputs["input_ids"].shape[1]:]
            texts.append(tokenizer.decode(new[0], skip_special_tokens=True))
            tokens.append(new_token_counts(new, tokenizer.eos_token_id)[0])
        return pd.DataFrame({"text": texts, "tokens": tokens})

    return generate


def hf_batched_generate(tokenizer, model, prompts: list[str], max_new_tokens: int):
    import torch

    enc = tokenizer(prompts, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.eos_token_id)
    new = out[:, enc["input_ids"].shape[1]:]
    return tokenizer.batch_decode(new, skip_special_tokens=True), new_token_counts(new, tokenizer.eos_token_id)


def predict_batch_udf_generate(model_dir: str, max_new_tokens: int, batch_size: int):
    from pyspark.ml.functions import predict_batch_udf
    from pyspark.sql.types import IntegerType, StringType, StructField, StructType

    def make_predict_fn():
        tokenizer, model = load_hf(model_dir, padding_side="left")

        def predict(prompts: np.ndarray) -> dict:
            texts, tokens = hf_batched_generate(tokenizer, model, [str(p) for p in prompts], max_new_tokens)
            return {"text": np.array(texts), "tokens": np.array(tokens, dtype=np.int32)}

        return predict

    return predict_batch_udf(
        make_predict_fn,
        return_type=StructType([StructField("text", StringType()), StructField("tokens", IntegerType())]),
        batch_size=batch_size,
    )
