"""Spark NLP's model names: what pretrained() fetches and runs, offline from a pre-filled Hugging Face cache."""

import logging
import shutil
import time

import huggingface_hub.constants
import pytest

import pipelines.engine.backends as backends
from pipelines.models.bundled import DEMO_MODEL, DEMO_MODEL_OPENVINO
from pipelines.models.pretrained import resolve_pretrained
from pipelines.models.source import ModelSourceError

# What each hub repository holds in the cache: the demo model's OpenVINO export stands in for the
# exports OpenVINO publishes, its safetensors for bigcode's weights.
CACHED_REPOS = {
    "OpenVINO/starcoder2-3b-int8-ov": DEMO_MODEL_OPENVINO,
    "OpenVINO/starcoder2-3b-int4-ov": DEMO_MODEL_OPENVINO,
    "bigcode/starcoder2-3b": DEMO_MODEL,
}


def fill_hub_cache(cache, repos):
    """The layout huggingface_hub leaves after a download: refs/main names a snapshot of the files."""
    for repo_id, source in repos.items():
        repo = cache / f"models--{repo_id.replace('/', '--')}"
        shutil.copytree(source, repo / "snapshots" / "0123456789abcdef")
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text("0123456789abcdef")
    return cache


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return fill_hub_cache(tmp_path / "hub", CACHED_REPOS)


@pytest.fixture
def without_openvino(monkeypatch):
    real = backends.is_installed
    monkeypatch.setattr(backends, "is_installed", lambda module: module != "openvino_genai" and real(module))


def snapshot(cache, repo_id):
    return str(cache / f"models--{repo_id.replace('/', '--')}" / "snapshots" / "0123456789abcdef")


@pytest.mark.parametrize("name, repo_id", [("starcoder2_3b_int8", "OpenVINO/starcoder2-3b-int8-ov"),
                                           ("starcoder2_3b_int4", "OpenVINO/starcoder2-3b-int4-ov")])
def test_the_int8_and_int4_names_run_the_openvino_exports(hub_cache, name, repo_id):
    resolved = resolve_pretrained(name, exports_unavailable=backends.exports_unavailable())
    assert resolved.path == snapshot(hub_cache, repo_id)
    assert resolved.dtype == "auto"  # the export's own weights
    assert backends.choose_backend(resolved.path).name == "openvino"
    assert resolved.note == f"{name} runs the OpenVINO export {repo_id}"


def test_without_openvino_genai_the_names_run_the_weights_on_pytorch_and_say_why(hub_cache, without_openvino):
    unavailable = backends.exports_unavailable()
    assert unavailable == "openvino_genai is not installed (pip install 'starcoder-pipelines[openvino]')"
    resolved = resolve_pretrained("starcoder2_3b_int4", exports_unavailable=unavailable)
    assert resolved.path == snapshot(hub_cache, "bigcode/starcoder2-3b")
    assert resolved.dtype == "int8"  # PyTorch has no int4 CPU kernel: the closest precision it runs
    assert backends.choose_backend(resolved.path).name == "pytorch"
    assert resolved.note == (
        "starcoder2_3b_int4 runs bigcode/starcoder2-3b in int8, not the OpenVINO export "
        "OpenVINO/starcoder2-3b-int4-ov it is shipped as (the faster engine on CPUs), because openvino_genai is not "
        "installed (pip install 'starcoder-pipelines[openvino]')")


def test_the_full_precision_name_runs_the_weights_in_their_own_dtype(hub_cache):
    resolved = resolve_pretrained("starcoder2_3b", exports_unavailable=backends.exports_unavailable())
    assert (resolved.path, resolved.dtype) == (snapshot(hub_cache, "bigcode/starcoder2-3b"), "auto")


def test_a_hub_id_of_an_openvino_export_fetches_its_ir_files(hub_cache):
    path = resolve_pretrained("OpenVINO/starcoder2-3b-int8-ov").path
    assert backends.model_forms(path) == ("openvino",)


def test_pretrained_names_fail_fast_offline_with_a_way_out(tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    started = time.monotonic()
    with pytest.raises(ModelSourceError, match="OpenVINO/starcoder2-3b-int8-ov.*loadSavedModel"):
        resolve_pretrained("starcoder2_3b_int8")
    with pytest.raises(ModelSourceError, match="bigcode/starcoder2-3b.*loadSavedModel"):
        resolve_pretrained("starcoder2_3b_int8", exports_unavailable="no engine runs them")
    assert time.monotonic() - started < 10


def test_unknown_pretrained_name_lists_the_known_ones():
    with pytest.raises(ModelSourceError, match="starcoder2_3b_int8"):
        resolve_pretrained("no_such_model")


def test_pretrained_from_a_mirror_directory(tiny_model_dir, tmp_path):
    shutil.copytree(tiny_model_dir, tmp_path / "starcoder2_3b_int8")
    resolved = resolve_pretrained("starcoder2_3b_int8", remote_loc=str(tmp_path))
    # the mirror holds the weights, not an export: they run in the name's precision on PyTorch
    assert resolved.path == str(tmp_path / "starcoder2_3b_int8") and resolved.dtype == "int8"


def test_the_annotator_logs_what_pretrained_runs(hub_cache, without_openvino, caplog):
    from pipelines.annotators.starcoder_transformer import StarCoderTransformer

    with caplog.at_level(logging.INFO, logger="pipelines.model"):
        annotator = StarCoderTransformer.pretrained("starcoder2_3b_int8")
    assert annotator.getDtype() == "int8" and annotator.model_spec().engine == "pytorch"
    assert "starcoder2_3b_int8 runs bigcode/starcoder2-3b in int8, not the OpenVINO export" in caplog.text


@pytest.mark.parametrize("openvino", [True, False], ids=["openvino export", "without openvino-genai"])
def test_a_pretrained_name_generates_what_its_engine_generates(hub_cache, monkeypatch, spark, openvino):
    pytest.importorskip("openvino_genai")
    import pandas as pd

    from pipelines import DocumentAssembler
    from pipelines.annotators.starcoder_transformer import StarCoderTransformer
    from pipelines.engine.engine import GenerationEngine
    from pipelines.engine.params import GenerationParams
    from pipelines.models import bundled

    if not openvino:
        real = backends.is_installed
        monkeypatch.setattr(backends, "is_installed", lambda module: module != "openvino_genai" and real(module))
    prompts = list(pd.read_parquet(bundled.SAMPLE_PROMPTS).sort_values("id")["prompt"])[:6]
    annotator = (StarCoderTransformer.pretrained("starcoder2_3b_int8").setInputCols(["documents"])
                 .setOutputCol("generation").setMaxOutputLength(8).setReturnFullText(False).setNumThreads(2))
    spec = annotator.model_spec()
    assert (spec.engine, spec.dtype) == (("openvino", "auto") if openvino else ("pytorch", "int8"))
    docs = DocumentAssembler().setInputCol("text").setOutputCol("documents").transform(
        spark.createDataFrame(list(enumerate(prompts)), "id long, text string"))
    rows = annotator.transform(docs).orderBy("id").collect()
    expected = GenerationEngine.load(spec).complete(prompts, GenerationParams(max_output_length=8, return_full_text=False))
    assert [r.generation[0].result for r in rows] == [row[0].text for row in expected]
