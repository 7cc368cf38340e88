"""outputLogProbs: log-probabilities of generated tokens, checked against one teacher-forced
forward pass over prompt + generation, through the engine, the annotator and the job."""

import math

import pytest
import torch

from pipelines import DocumentAssembler, StarCoderTransformer
from pipelines.engine.generate import generate_batch
from pipelines.engine.params import GenerationParams

PROMPT_TEXTS = [
    "def add(a, b):",
    "x",
    "import os\nimport sys\n" * 20,
    "class Stack:\n    def push(self, item):\n",
]


def teacher_forced_logprob(model, prompt: list[int], generated: list[int]) -> float:
    """Sum of log p(generated[t] | prompt + generated[:t]) from one forward pass."""
    ids = torch.tensor([prompt + generated])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(ids).logits[0].float(), dim=-1)
    positions = torch.arange(len(prompt) - 1, len(prompt) + len(generated) - 1)
    return float(logprobs[positions, torch.tensor(generated)].double().sum())


@pytest.fixture(scope="module")
def prompts(engine):
    return engine.tokenizer.encode_batch(PROMPT_TEXTS)


@pytest.mark.parametrize("settings", [
    dict(),  # greedy
    dict(repetition_penalty=1.5, no_repeat_ngram_size=2),  # penalties change the choice, not the score
    dict(do_sample=True, temperature=0.5, top_k=5, top_p=0.8),  # so do the sampling settings
])
def test_logprob_is_the_models_own_log_probability_of_the_generated_tokens(engine, prompts, settings):
    params = GenerationParams(max_output_length=16, output_logprobs=True, **settings)
    seeds = [11, 12, 13, 14] if params.do_sample else None
    outputs = generate_batch(engine.model, prompts, params, 0, engine.device, seeds=seeds)
    for prompt, out in zip(prompts, outputs):
        expected = teacher_forced_logprob(engine.model, prompt, out.token_ids)
        assert out.logprob < 0
        assert math.isclose(out.logprob, expected, rel_tol=1e-4, abs_tol=1e-3), (out.logprob, expected)


def test_logprobs_are_off_by_default_and_do_not_change_the_output(engine, prompts):
    off = generate_batch(engine.model, prompts, GenerationParams(max_output_length=12), 0, engine.device)
    on = generate_batch(engine.model, prompts, GenerationParams(max_output_length=12, output_logprobs=True), 0,
                        engine.device)
    assert all(o.logprob is None for o in off)
    assert [o.token_ids for o in off] == [o.token_ids for o in on]


def test_completions_carry_sum_and_mean(engine):
    rows = engine.complete(PROMPT_TEXTS + [""], GenerationParams(max_output_length=10, output_logprobs=True),
                           batch_size=2)
    for (c,) in rows[:-1]:
        assert c.logprob < 0 and math.isclose(c.mean_logprob, c.logprob / c.completion_tokens)
    (empty,) = rows[-1]
    assert empty.logprob is None and empty.mean_logprob is None
    (plain,) = engine.complete(PROMPT_TEXTS[:1], GenerationParams(max_output_length=10))[0]
    assert plain.logprob is None


def test_annotator_writes_logprobs_into_the_metadata_only_when_asked(spark, tiny_model_dir):
    data = spark.createDataFrame([(i, t) for i, t in enumerate(PROMPT_TEXTS)], "id long, text string")
    assembler = DocumentAssembler().setInputCol("text").setOutputCol("documents")
    generator = StarCoderTransformer.loadSavedModel(str(tiny_model_dir)).setInputCols(["documents"]) \
        .setMaxOutputLength(8)
    assert generator.getOutputLogProbs() is False
    plain = generator.transform(assembler.transform(data)).select("generation").collect()
    assert all("logprob" not in r.generation[0].metadata for r in plain)
    scored = generator.setOutputLogProbs(True).transform(assembler.transform(data)).select("generation").collect()
    for r in scored:
        meta = r.generation[0].metadata
        assert float(meta["logprob"]) < 0
        assert math.isclose(float(meta["mean_logprob"]), float(meta["logprob"]) / int(meta["completion_tokens"]),
                            rel_tol=1e-9)


def test_generation_job_writes_logprob_columns_when_configured(spark, tiny_model_dir, tmp_path):
    from pipelines.jobs import generate as generation_job
    from pipelines.jobs.config import config_from_dict

    path = str(tmp_path / "prompts.parquet")
    spark.createDataFrame([(f"p{i}", t) for i, t in enumerate(PROMPT_TEXTS + [""])], "id string, prompt string") \
        .write.parquet(path)

    def config(out, logprobs):
        return config_from_dict({
            "input": {"path": path, "text_col": "prompt"},
            "model": {"source": str(tiny_model_dir)},
            "generation": {"max_output_length": 6, "output_logprobs": logprobs},
            "output": {"path": str(tmp_path / out), "shards": 2},
        })

    summary = generation_job.run(spark, config("with", True))
    assert summary.params["output_logprobs"] is True
    rows = {r.id: r for r in spark.read.parquet(str(tmp_path / "with")).collect()}
    for key, r in rows.items():
        if key == f"p{len(PROMPT_TEXTS)}":  # the empty prompt: nothing generated, nothing scored
            assert r.logprob is None and r.mean_logprob is None
        else:
            assert r.logprob < 0 and math.isclose(r.mean_logprob, r.logprob / r.completion_tokens, rel_tol=1e-9)
    generation_job.run(spark, config("without", False))
    assert "logprob" not in spark.read.parquet(str(tmp_path / "without")).columns
