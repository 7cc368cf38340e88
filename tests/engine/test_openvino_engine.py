"""The OpenVINO engine on the bundled demo model's export: same answers as the PyTorch engine,
the same generation settings honoured, batch-invariant, and usable from Spark."""

import pathlib

import pandas as pd
import pytest
import torch

pytest.importorskip("openvino_genai")

from pipelines.annotators.starcoder_transformer import StarCoderTransformer  # noqa: E402
from pipelines.engine.backends import choose_backend  # noqa: E402
from pipelines.engine.engine import GenerationEngine  # noqa: E402
from pipelines.engine.generate import Request  # noqa: E402
from pipelines.engine.params import GenerationParams, InvalidParamError, ModelSpec  # noqa: E402
from pipelines.jobs import generate as generation_job  # noqa: E402
from pipelines.jobs.config import config_from_dict  # noqa: E402
from pipelines.models import bundled  # noqa: E402
from pipelines.models.source import ModelSourceError  # noqa: E402
from pipelines.prompts.fim import fim_prompt  # noqa: E402

OV_DIR = str(bundled.DEMO_MODEL_OPENVINO)
PT_DIR = str(bundled.DEMO_MODEL)


@pytest.fixture(scope="module")
def prompts():
    return list(pd.read_parquet(bundled.SAMPLE_PROMPTS).sort_values("id")["prompt"])[:40]


@pytest.fixture(scope="module")
def ov():
    return GenerationEngine.load(ModelSpec(source=OV_DIR, dtype="float32", num_threads=2))


@pytest.fixture(scope="module")
def pt():
    return GenerationEngine.load(ModelSpec(source=PT_DIR, dtype="float32", num_threads=2))


def engine_for(source, engine="auto", device="auto", params=None):
    return choose_backend(source, engine, device, params).name


def test_engine_is_picked_by_what_the_directory_holds(tmp_path):
    assert engine_for(OV_DIR) == "openvino" and engine_for(PT_DIR) == "pytorch"
    assert engine_for(PT_DIR, "pytorch") == "pytorch" and engine_for(OV_DIR, "openvino") == "openvino"
    with pytest.raises(ModelSourceError, match="export_openvino.sh"):
        engine_for(PT_DIR, "openvino")
    with pytest.raises(ModelSourceError, match="use engine 'openvino'"):
        engine_for(OV_DIR, "pytorch")
    with pytest.raises(InvalidParamError, match="engine 'openvino' runs on cpu, not device 'cuda'; use engine 'pytorch'"):
        engine_for(OV_DIR, "openvino", "cuda")


def test_auto_takes_the_first_row_of_the_table_that_runs_the_model_with_the_params(tmp_path):
    both = tmp_path / "both"  # a directory holding safetensors weights and an OpenVINO export
    both.mkdir()
    for directory in (PT_DIR, OV_DIR):
        for f in pathlib.Path(directory).iterdir():
            if not (both / f.name).exists():
                (both / f.name).symlink_to(f)
    assert engine_for(str(both)) == "openvino"  # the table's order: the faster engine first
    assert engine_for(str(both), "pytorch") == "pytorch"
    logprobs = GenerationParams(output_logprobs=True)
    assert engine_for(str(both), "auto", "auto", logprobs) == "pytorch"
    assert engine_for(OV_DIR, "auto", "auto", GenerationParams()) == "openvino"
    with pytest.raises(InvalidParamError, match="outputLogProbs is not supported by engine 'openvino'.*; engine "
                                                "'pytorch' honours it, on a Hugging Face directory with"):
        engine_for(OV_DIR, "auto", "auto", logprobs)  # only openvino runs an export alone
    with pytest.raises(InvalidParamError, match="ignoreTokenIds is not supported by engine 'openvino'"):
        engine_for(str(both), "openvino", "auto", GenerationParams(ignore_token_ids=(5,)))


def test_a_refused_param_fails_on_the_driver_before_any_model_loads(spark, load_log, prompts):
    loads_before = load_log.read_text() if load_log.exists() else ""
    docs = spark.createDataFrame([(0, prompts[0])], "id long, text string")
    from pipelines import DocumentAssembler

    docs = DocumentAssembler().setInputCol("text").setOutputCol("documents").transform(docs)
    annotator = StarCoderTransformer.loadSavedModel(OV_DIR).setInputCols(["documents"]).setOutputLogProbs(True)
    with pytest.raises(InvalidParamError, match="outputLogProbs is not supported by engine 'openvino'"):
        annotator.transform(docs)
    assert (load_log.read_text() if load_log.exists() else "") == loads_before
    with pytest.raises(InvalidParamError, match="engine must be one of"):
        ModelSpec(source=OV_DIR, engine="onnx")


def test_greedy_tokens_match_the_pytorch_engine(ov, pt, prompts):
    params = GenerationParams(max_output_length=24)
    ids = [pt.tokenizer.encode(p) for p in prompts]
    ours = ov.decoder.generate([Request(p) for p in ids], params, None)
    differ = 0
    for prompt_ids, (a,) in zip(ids, ours):
        ((b,),) = pt.decoder.generate([Request(prompt_ids)], params, None, max_rows=1)
        if a.token_ids == b.token_ids:
            continue
        differ += 1
        # Two engines add floats in different orders: they may part only where the top two
        # logits are all but tied.
        k = next(i for i, (x, y) in enumerate(zip(a.token_ids, b.token_ids)) if x != y)
        with torch.no_grad():
            logits = pt.model(torch.tensor([prompt_ids + b.token_ids[:k]])).logits[0, -1]
        assert abs(logits[a.token_ids[k]] - logits[b.token_ids[k]]) < 0.01
    assert differ <= len(ids) // 10


def test_output_does_not_depend_on_the_batch(ov, prompts):
    params = GenerationParams(max_output_length=12)
    together = [r[0].completion for r in ov.complete(prompts[:12], params)]
    reversed_ = [r[0].completion for r in ov.complete(prompts[:12][::-1], params)][::-1]
    alone = [ov.complete([p], params)[0][0].completion for p in prompts[:12]]
    assert together == reversed_ == alone


def test_stop_strings_cut_the_text_and_end_generation(ov, prompts):
    plain = ov.complete(prompts[:1], GenerationParams(max_output_length=40, return_full_text=False))[0][0]
    assert plain.finish_reason == "length" and len(plain.completion) > 10
    stop = plain.completion[6:9]
    cut = ov.complete(prompts[:1], GenerationParams(max_output_length=40, stop_strings=[stop]))[0][0]
    assert cut.finish_reason == "stop"
    assert cut.completion == plain.completion[: plain.completion.index(stop)]
    assert cut.completion_tokens < plain.completion_tokens


def test_fill_in_the_middle_returns_the_middle_only(ov):
    prompt = fim_prompt("def add(a, b):\n    ", "\n\nprint(add(1, 2))\n")
    out = ov.complete([prompt], GenerationParams(max_output_length=30))[0][0]
    assert out.text == out.completion and "<fim_" not in out.completion
    assert out.finish_reason in ("eos", "stop", "length")


def test_sampling_is_reproducible_per_sequence_and_samples_differ(ov, prompts):
    params = GenerationParams(max_output_length=12, do_sample=True, temperature=1.0, random_seed=7, n_return_sequences=3)
    together = [[c.completion for c in row] for row in ov.complete(prompts[:4], params)]
    alone = [[c.completion for c in ov.complete([p], params)[0]] for p in prompts[:4]]
    assert together == alone
    assert all(len(set(row)) > 1 for row in together)
    other = GenerationParams(max_output_length=12, do_sample=True, temperature=1.0, random_seed=8, n_return_sequences=3)
    assert [[c.completion for c in row] for row in ov.complete(prompts[:4], other)] != together


def test_min_output_length_and_unsupported_settings(ov, prompts):
    out = ov.complete(prompts[:3], GenerationParams(max_output_length=8, min_output_length=8))
    assert all(r[0].completion_tokens == 8 for r in out)
    with pytest.raises(InvalidParamError, match="ignoreTokenIds"):
        ov.complete(prompts[:1], GenerationParams(ignore_token_ids=[5]))


def test_load_saved_model_picks_openvino_and_spark_job_runs_it(spark, tmp_path, ov, prompts):
    assert StarCoderTransformer.loadSavedModel(OV_DIR, spark).getEngine() == "openvino"
    assert StarCoderTransformer.loadSavedModel(PT_DIR, spark).getEngine() == "pytorch"
    with pytest.raises(ModelSourceError, match="export_openvino.sh"):
        StarCoderTransformer.loadSavedModel(PT_DIR, spark, use_openvino=True)

    path = str(tmp_path / "in.parquet")
    pd.DataFrame({"id": [f"r{i}" for i in range(10)], "prompt": prompts[:10]}).to_parquet(path)
    config = config_from_dict({
        "input": {"path": path, "id_col": "id", "text_col": "prompt"},
        "model": {"source": "bundled:demo-model-openvino", "engine": "openvino", "dtype": "float32"},
        "generation": {"max_output_length": 10},
        "output": {"path": str(tmp_path / "out"), "shards": 2},
    })
    generation_job.run(spark, config)
    rows = {r.id: r.completion for r in spark.read.parquet(str(tmp_path / "out")).collect()}
    expected = [r[0].completion for r in ov.complete(prompts[:10], GenerationParams(max_output_length=10))]
    assert rows == {f"r{i}": text for i, text in enumerate(expected)}


def test_threads_are_pinned_only_when_the_pipeline_has_the_machine(monkeypatch):
    from pipelines.engine import openvino_decoder

    monkeypatch.setattr(openvino_decoder, "machine_cores", lambda: 4)
    shared = openvino_decoder.cpu_properties(ModelSpec(source=OV_DIR, num_threads=1, dtype="float32"))
    # One Spark task among several on a worker: pinning would put every task on the same core.
    assert shared["INFERENCE_NUM_THREADS"] == 1 and shared["ENABLE_CPU_PINNING"] is False
    assert shared["INFERENCE_PRECISION_HINT"] == "f32"
    alone = openvino_decoder.cpu_properties(ModelSpec(source=OV_DIR, num_threads=0))
    assert alone["INFERENCE_NUM_THREADS"] == 4 and alone["ENABLE_CPU_PINNING"] is True
    assert "INFERENCE_PRECISION_HINT" not in alone  # auto: the plugin's default for this CPU
    # The sampler gets the pipeline's threads, not one per core of the machine.
    assert shared["sampler_num_threads"] == 1 and alone["sampler_num_threads"] == 4


def test_stop_strings_are_checked_by_the_engine_not_the_pipeline(ov, prompts):
    # Stop strings given to the pipeline make its sampling threads detokenise, and a race in
    # OpenVINO GenAI's detokenizer queue can then leave step() waiting forever.
    sampled = dict(max_output_length=40, do_sample=True, temperature=1.0, random_seed=3, n_return_sequences=3)
    assert ov.decoder._config(GenerationParams(**sampled, stop_strings=["return"]), 1, ()).stop_strings == set()
    plain = ov.complete(prompts[:4], GenerationParams(**sampled))
    stop = plain[0][1].completion[5:8]
    cut = ov.complete(prompts[:4], GenerationParams(**sampled, stop_strings=[stop]))
    stopped = 0
    for plain_row, cut_row in zip(plain, cut):
        for whole, part in zip(plain_row, cut_row):
            if stop in whole.completion:  # each sample's draws do not depend on when others stop
                stopped += 1
                assert part.finish_reason == "stop" and part.completion == whole.completion[:whole.completion.index(stop)]
            else:
                assert part.completion == whole.completion
    assert stopped >= 1


def test_the_engine_bounds_the_rows_in_the_pipeline(ov, prompts, monkeypatch):
    from pipelines.engine import openvino_decoder

    params = GenerationParams(max_output_length=8, do_sample=True, random_seed=5, n_return_sequences=3)
    unbounded = [[c.completion for c in row] for row in ov.complete(prompts[:6], params)]
    pipeline, in_pipeline = ov.decoder.pipeline, []

    class Counting:  # the pipeline, counting its requests at every step
        def __getattr__(self, name):
            return getattr(pipeline, name)

        def step(self):
            pipeline.step()
            in_pipeline.append(pipeline.get_metrics().requests)

    monkeypatch.setattr(openvino_decoder, "MAX_RUNNING_SEQUENCES", 4)
    monkeypatch.setattr(ov.decoder, "pipeline", Counting())
    bounded = [[c.completion for c in row] for row in ov.complete(prompts[:6], params)]
    assert bounded == unbounded  # 18 rows, at most 4 at a time: the same samples
    assert max(in_pipeline) <= 4 and len(in_pipeline) > 3 * 8
