"""Exports kept by the model's fingerprint: made once per model and format, never used half-written."""

import json
import shutil

import pytest

from pipelines.models import openvino_export
from pipelines.models.bundled import DEMO_MODEL, DEMO_MODEL_OPENVINO
from pipelines.models.fingerprint import model_fingerprint
from pipelines.models.locations import ModelSourceError


def test_the_fingerprint_follows_the_files_not_the_path(tmp_path):
    a = shutil.copytree(DEMO_MODEL, tmp_path / "a")
    b = shutil.copytree(DEMO_MODEL, tmp_path / "b")
    assert model_fingerprint(a) == model_fingerprint(b) == model_fingerprint(DEMO_MODEL)
    weights = b / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte of one tensor, as a fine-tune changes them all
    weights.write_bytes(bytes(data))
    assert model_fingerprint(b) != model_fingerprint(a)
    config = json.loads((a / "generation_config.json").read_text())
    config["eos_token_id"] = 1
    (a / "generation_config.json").write_text(json.dumps(config))
    assert model_fingerprint(a) != model_fingerprint(DEMO_MODEL)
    assert model_fingerprint(DEMO_MODEL_OPENVINO) != model_fingerprint(DEMO_MODEL)


@pytest.fixture
def exports_made(monkeypatch):
    """The exporter replaced by a copy of the demo model's real export; records what it was asked."""
    made = []

    def export(source, dest, weights):
        made.append((str(source), weights))
        shutil.copytree(DEMO_MODEL_OPENVINO, dest)
        return dest

    monkeypatch.setattr(openvino_export, "export_openvino", export)
    return made


def test_an_export_is_made_once_per_model_and_format(tmp_path, exports_made):
    model = shutil.copytree(DEMO_MODEL, tmp_path / "model")
    cache = tmp_path / "exports"
    first = openvino_export.cached_export(model, "openvino-int8", cache)
    assert openvino_export.cached_export(model, "openvino-int8", cache) == first
    assert exports_made == [(str(model), "int8")]
    marker = json.loads((tmp_path / "exports" / first.rsplit("/", 1)[1] / "export.json").read_text())
    assert marker["source_fingerprint"] == model_fingerprint(model) and marker["export"] == "openvino-int8"
    moved = shutil.move(model, tmp_path / "moved")  # the same model elsewhere: the same export
    assert openvino_export.cached_export(moved, "openvino-int8", cache) == first
    assert openvino_export.cached_export(moved, "openvino-int4", cache) != first
    assert len(exports_made) == 2


def test_a_changed_model_is_exported_again(tmp_path, exports_made):
    model = shutil.copytree(DEMO_MODEL, tmp_path / "model")
    first = openvino_export.cached_export(model, "openvino-int8", tmp_path / "exports")
    (model / "config.json").write_text((model / "config.json").read_text().replace('"sliding_window": 1024',
                                                                                   '"sliding_window": 512'))
    assert openvino_export.cached_export(model, "openvino-int8", tmp_path / "exports") != first
    assert len(exports_made) == 2


def test_an_interrupted_export_is_never_used(tmp_path, exports_made, monkeypatch):
    model = shutil.copytree(DEMO_MODEL, tmp_path / "model")
    cache = tmp_path / "exports"
    target = cache / f"{model_fingerprint(model)[:32]}-openvino-int8"
    shutil.copytree(DEMO_MODEL_OPENVINO, target)  # everything but export.json: a rename that never finished

    def fails(source, dest, weights):
        (tmp_path / "partial").mkdir()
        raise ModelSourceError("exporter killed")

    monkeypatch.setattr(openvino_export, "export_openvino", fails)
    with pytest.raises(ModelSourceError, match="exporter killed"):
        openvino_export.cached_export(model, "openvino-int8", cache)
    assert [p.name for p in cache.iterdir()] == [target.name]  # no staging left behind
    monkeypatch.undo()
    monkeypatch.setattr(openvino_export, "export_openvino", lambda s, d, w: shutil.copytree(DEMO_MODEL_OPENVINO, d))
    assert openvino_export.cached_export(model, "openvino-int8", cache) == str(target)
    assert (target / "export.json").is_file()


def test_an_unknown_export_format_is_named():
    with pytest.raises(ModelSourceError, match="model.export must be one of openvino-int8, openvino-int4, openvino-fp16"):
        openvino_export.cached_export(DEMO_MODEL, "openvino-int2")


@pytest.mark.parametrize("widths, group", [((3072, 12288), 128), ((576, 1536), 64), ((96, 288), 32), ((100, 300), -1)],
                         ids=["starcoder2-3b", "smollm2-135m", "32", "per row"])
def test_int4_groups_divide_every_layer_width(tmp_path, widths, group):
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": widths[0], "intermediate_size": widths[1]}))
    assert openvino_export.int4_group_size(tmp_path) == group
