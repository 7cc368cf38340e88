"""Model directories and names: what is accepted, what is refused and how it is explained."""

import json
import shutil

import pytest

from pipelines.models.source import (
    ModelSourceError,
    resolve_model,
    to_local_path,
    validate_model_dir,
)


def copy_model(src, dst, drop=()):
    shutil.copytree(src, dst)
    for name in drop:
        (dst / name).unlink()
    return dst


def test_a_complete_starcoder2_directory_is_accepted(tiny_model_dir):
    assert validate_model_dir(tiny_model_dir) == tiny_model_dir
    assert resolve_model(str(tiny_model_dir)).path == str(tiny_model_dir)
    assert resolve_model(f"file:{tiny_model_dir}").path == str(tiny_model_dir)


def test_dbfs_uris_map_to_the_fuse_mount():
    assert to_local_path("dbfs:/models/starcoder2-3b") == "/dbfs/models/starcoder2-3b"
    assert to_local_path("/Volumes/main/default/models/sc2") == "/Volumes/main/default/models/sc2"


def test_missing_directory_says_where_to_point(tmp_path):
    with pytest.raises(ModelSourceError, match="does not exist.*DBFS"):
        validate_model_dir(tmp_path / "nope")


def test_missing_tokenizer_is_named(tiny_model_dir, tmp_path):
    d = copy_model(tiny_model_dir, tmp_path / "m", drop=["tokenizer.json"])
    with pytest.raises(ModelSourceError, match="no tokenizer.json"):
        validate_model_dir(d)


def test_missing_weights_are_named(tiny_model_dir, tmp_path):
    d = copy_model(tiny_model_dir, tmp_path / "m", drop=["model.safetensors"])
    with pytest.raises(ModelSourceError, match="no \\*.safetensors"):
        validate_model_dir(d)


def test_pickle_only_weights_are_refused(tiny_model_dir, tmp_path):
    d = copy_model(tiny_model_dir, tmp_path / "m", drop=["model.safetensors"])
    (d / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(ModelSourceError, match="only pickle weights.*safetensors"):
        validate_model_dir(d)


def test_other_architectures_are_refused(tiny_model_dir, tmp_path):
    d = copy_model(tiny_model_dir, tmp_path / "m")
    config = json.loads((d / "config.json").read_text())
    config["model_type"] = "bert"
    (d / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelSourceError, match="model_type 'bert' is an encoder.*families: starcoder2, gpt_bigcode, llama, qwen2, mistral"):
        validate_model_dir(d)
