"""The llama.cpp engine on GGUF files of the bundled demo model: chosen by engine auto, the same
greedy tokens as llama.cpp's own generation, batch-invariant, every generation setting honoured,
and usable from Spark."""

import os

import pandas as pd
import pytest

if os.environ.get("STARCODER_REQUIRE_LLAMACPP") != "1":  # CI requires it: a failed install must not skip these
    pytest.importorskip("llama_cpp")

from devtools.gguf_writer import write_gguf  # noqa: E402
from pipelines.annotators.starcoder_transformer import StarCoderTransformer  # noqa: E402
from pipelines.engine import memory_plan  # noqa: E402
from pipelines.engine.backends import choose_backend  # noqa: E402
from pipelines.engine.engine import GenerationEngine  # noqa: E402
from pipelines.engine.generate import Request  # noqa: E402
from pipelines.engine.params import GenerationParams, InvalidParamError, ModelSpec  # noqa: E402
from pipelines.engine.precision import describe_dtype  # noqa: E402
from pipelines.jobs import generate as generation_job  # noqa: E402
from pipelines.jobs.config import config_from_dict  # noqa: E402
from pipelines.models import bundled  # noqa: E402
from pipelines.prompts.fim import fim_prompt  # noqa: E402


@pytest.fixture(scope="module")
def prompts():
    return list(pd.read_parquet(bundled.SAMPLE_PROMPTS).sort_values("id")["prompt"])[:24]


@pytest.fixture(scope="module")
def gguf(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo-gguf")
    return {t: str(write_gguf(bundled.DEMO_MODEL, out / f"demo-{t}.gguf", t)) for t in ("Q8_0", "F32")}


@pytest.fixture(scope="module")
def llama(gguf):
    return GenerationEngine.load(ModelSpec(source=gguf["Q8_0"], num_threads=2))


def llama_cpp_own(path, prompt_ids, new_tokens):
    """llama.cpp's own greedy generation (llama-cpp-python's Llama), one prompt at a time."""
    from llama_cpp import Llama

    model = Llama(model_path=path, n_ctx=1024, n_threads=2, verbose=False)
    out = []
    for ids in prompt_ids:
        model.reset()
        tokens = []
        for token in model.generate(ids, top_k=1, temp=0.0, reset=True):
            tokens.append(token)
            if token == model.token_eos() or len(tokens) == new_tokens:
                break
        out.append(tokens)
    return out


def test_auto_runs_a_gguf_on_llamacpp_unless_a_dtype_or_param_asks_for_pytorch(gguf):
    assert choose_backend(gguf["Q8_0"]).name == "llamacpp"
    assert choose_backend(gguf["Q8_0"], dtype="float32").name == "pytorch"  # dequantised, as asked
    assert choose_backend(gguf["Q8_0"], params=GenerationParams(output_logprobs=True)).name == "llamacpp"
    with pytest.raises(InvalidParamError, match="engine 'llamacpp' runs the model file's own types .*not dtype 'int8'"):
        choose_backend(gguf["Q8_0"], "llamacpp", dtype="int8")
    with pytest.raises(InvalidParamError, match="engine 'llamacpp' runs on cpu, not device 'cuda'; use engine 'pytorch'"):
        choose_backend(gguf["Q8_0"], "llamacpp", "cuda")
    backend = choose_backend(gguf["Q8_0"])
    assert "own quantised weights" in describe_dtype(gguf["Q8_0"], backend, "auto", "auto")


def test_memory_plan_counts_the_files_quantised_weights_in_each_worker(gguf):
    memory = memory_plan.worker_memory(gguf["Q8_0"], "auto", "auto", "auto", kv_cache_gb=1)
    assert memory.weights == os.path.getsize(gguf["Q8_0"]) and not memory.weights_shared
    dequantised = memory_plan.worker_memory(gguf["Q8_0"], "float32", "auto", "auto", kv_cache_gb=1)
    assert dequantised.weights > 3 * memory.weights


@pytest.mark.parametrize("kind", ["Q8_0", "F32"])
def test_greedy_tokens_are_llama_cpps_own(gguf, prompts, kind):
    engine = GenerationEngine.load(ModelSpec(source=gguf[kind], num_threads=2))
    ids = engine.tokenizer.encode_batch(prompts[:8])
    ours = engine.decoder.generate([Request(p) for p in ids], GenerationParams(max_output_length=24), None)
    assert [o.token_ids[:24] for (o,) in ours] == llama_cpp_own(gguf[kind], ids, 24)


def test_output_does_not_depend_on_the_batch_or_the_kv_cache_size(llama, gguf, prompts):
    params = GenerationParams(max_output_length=16)
    together = [r[0].completion for r in llama.complete(prompts, params)]
    reversed_ = [r[0].completion for r in llama.complete(prompts[::-1], params)][::-1]
    alone = [llama.complete([p], params)[0][0].completion for p in prompts[:6]]
    assert together == reversed_ and together[:6] == alone
    # A cache too small for every row at once: rows wait for cells and take them as others finish.
    from pipelines.engine import llamacpp_decoder

    small = GenerationEngine.load(ModelSpec(source=gguf["Q8_0"], num_threads=2))
    small.decoder.kv_tokens = max(len(ids) for ids in small.tokenizer.encode_batch(prompts)) + 40
    assert small.decoder.kv_tokens < sum(len(ids) + 16 for ids in small.tokenizer.encode_batch(prompts))
    assert [r[0].completion for r in small.complete(prompts, params)] == together
    assert llamacpp_decoder.MAX_RUNNING_SEQUENCES < len(prompts)  # rows waited for a place too


def test_stop_strings_eos_and_length_end_rows(llama, prompts):
    plain = llama.complete(prompts[:1], GenerationParams(max_output_length=40, return_full_text=False))[0][0]
    assert plain.finish_reason == "length" and plain.completion_tokens == 40
    stop = plain.completion[6:9]
    cut = llama.complete(prompts[:1], GenerationParams(max_output_length=40, stop_strings=[stop]))[0][0]
    assert cut.finish_reason == "stop" and cut.completion == plain.completion[: plain.completion.index(stop)]
    # the end-of-text id ends a row, and is not part of the text
    ids = llama.tokenizer.encode(prompts[0])
    ((plain_ids,),) = llama.decoder.generate([Request(ids)], GenerationParams(max_output_length=40), None)
    eos, llama.decoder.eos_id = llama.decoder.eos_id, plain_ids.token_ids[3]
    try:
        ((ended,),) = llama.decoder.generate([Request(ids)], GenerationParams(max_output_length=40), None)
    finally:
        llama.decoder.eos_id = eos
    assert (ended.token_ids, ended.finish_reason, ended.ends_with_stop_token) == (plain_ids.token_ids[:4], "eos", True)


def test_token_settings_are_honoured(llama, prompts):
    base = llama.complete(prompts[:4], GenerationParams(max_output_length=12))
    ids = llama.tokenizer.encode_batch(prompts[:4])
    first = [llama.decoder.generate([Request(p)], GenerationParams(max_output_length=1), None)[0][0].token_ids[0]
             for p in ids]
    # stopTokenIds: a row ends at its first token; minOutputLength keeps it from ending before 3
    stopped = llama.decoder.generate([Request(p) for p in ids], GenerationParams(max_output_length=12,
                                                                                stop_token_ids=first), None)
    assert [(o.token_ids, o.finish_reason) for (o,) in stopped] == [([t], "stop") for t in first]
    held = llama.decoder.generate([Request(p) for p in ids], GenerationParams(
        max_output_length=12, min_output_length=3, stop_token_ids=first), None)
    assert all(len(o.token_ids) >= 3 and first[k] not in o.token_ids[:3] for k, (o,) in enumerate(held))
    # ignoreTokenIds: never generated
    banned = llama.decoder.generate([Request(p) for p in ids], GenerationParams(
        max_output_length=12, ignore_token_ids=first), None)
    assert all(t not in o.token_ids for (o,) in banned for t in first)
    # noRepeatNgramSize: no pair of tokens twice in a row's output
    long = llama.decoder.generate([Request(p) for p in ids], GenerationParams(max_output_length=60,
                                                                             no_repeat_ngram_size=2), None)
    for (o,) in long:
        pairs = list(zip(o.token_ids, o.token_ids[1:]))
        assert len(pairs) == len(set(pairs))
    # repetitionPenalty changes greedy output, the same way each time
    penalised = GenerationParams(max_output_length=12, repetition_penalty=1.8)
    once = [r[0].completion for r in llama.complete(prompts[:4], penalised)]
    assert once == [r[0].completion for r in llama.complete(prompts[:4], penalised)]
    assert once != [r[0].completion for r in base]


def test_logprobs_are_the_models_own(llama, gguf, prompts):
    params = GenerationParams(max_output_length=10, output_logprobs=True)
    ours = llama.complete(prompts[:3], params)
    reference = GenerationEngine.load(ModelSpec(source=gguf["Q8_0"], engine="pytorch", dtype="float32"))
    theirs = reference.complete(prompts[:3], params)
    for (a,), (b,) in zip(ours, theirs):
        assert a.logprob < 0 and a.mean_logprob == pytest.approx(a.logprob / a.completion_tokens)
        if a.completion == b.completion:  # the same tokens: nearly the same probabilities
            assert a.logprob == pytest.approx(b.logprob, abs=0.05 * a.completion_tokens)


def test_sampling_is_reproducible_per_sequence_and_samples_differ(llama, prompts):
    params = GenerationParams(max_output_length=12, do_sample=True, temperature=1.0, random_seed=7, n_return_sequences=3)
    together = [[c.completion for c in row] for row in llama.complete(prompts[:4], params)]
    alone = [[c.completion for c in llama.complete([p], params)[0]] for p in prompts[:4]]
    assert together == alone
    assert all(len(set(row)) > 1 for row in together)
    other = GenerationParams(max_output_length=12, do_sample=True, temperature=1.0, random_seed=8, n_return_sequences=3)
    assert [[c.completion for c in row] for row in llama.complete(prompts[:4], other)] != together
    narrow = GenerationParams(max_output_length=12, do_sample=True, top_k=1, random_seed=7)
    greedy = GenerationParams(max_output_length=12)
    assert [r[0].completion for r in llama.complete(prompts[:4], narrow)] == \
        [r[0].completion for r in llama.complete(prompts[:4], greedy)]


def test_fill_in_the_middle_returns_the_middle_only(llama):
    out = llama.complete([fim_prompt("def add(a, b):\n    ", "\n\nprint(add(1, 2))\n")],
                         GenerationParams(max_output_length=30))[0][0]
    assert out.text == out.completion and "<fim_" not in out.completion


def test_a_row_too_long_for_the_kv_cache_is_refused_with_what_to_do(gguf, prompts):
    engine = GenerationEngine.load(ModelSpec(source=gguf["Q8_0"], num_threads=2))
    engine.decoder.kv_tokens = 16
    with pytest.raises(RuntimeError, match="does not fit llama.cpp's KV cache of 16 tokens: raise kvCacheSizeGB"):
        engine.complete(prompts[:1], GenerationParams(max_output_length=8))


def test_spark_job_on_a_gguf_runs_llamacpp_and_writes_what_the_engine_writes(spark, tmp_path, llama, gguf, prompts):
    assert StarCoderTransformer.loadSavedModel(gguf["Q8_0"], spark).getEngine() in ("auto", "llamacpp")
    path = str(tmp_path / "in.parquet")
    pd.DataFrame({"id": [f"r{i}" for i in range(10)], "prompt": prompts[:10]}).to_parquet(path)
    config = config_from_dict({
        "input": {"path": path, "id_col": "id", "text_col": "prompt"},
        "model": {"source": gguf["Q8_0"]},
        "generation": {"max_output_length": 10},
        "output": {"path": str(tmp_path / "out"), "shards": 2},
    })
    generation_job.run(spark, config)
    rows = {r.id: r.completion for r in spark.read.parquet(str(tmp_path / "out")).collect()}
    expected = [r[0].completion for r in llama.complete(prompts[:10], GenerationParams(max_output_length=10))]
    assert rows == {f"r{i}": text for i, text in enumerate(expected)}
