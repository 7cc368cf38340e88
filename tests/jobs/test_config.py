"""The job config: YAML + overrides -> one validated object; errors name the key and the file."""

from pathlib import Path

import pytest

from pipelines.engine.params import GenerationParams
from pipelines.jobs.config import ConfigError, JobConfig, load_config

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def write(tmp_path, text):
    path = tmp_path / "job.yaml"
    path.write_text(text)
    return path


MINIMAL = """
input: {path: in.parquet}
model: {source: /models/sc2}
output: {path: out}
"""


def test_every_shipped_config_is_valid():
    for path in sorted(CONF_DIR.glob("*.yaml")):
        assert isinstance(load_config(path), JobConfig), path


def test_local_config_points_at_the_bundled_model_and_corpus():
    config = load_config(CONF_DIR / "local.yaml")
    assert Path(config.model.source).name == "demo-model" and Path(config.model.source).is_dir()
    assert Path(config.input.path).exists()
    assert config.spark.master.startswith("local")


def test_overrides_are_typed_by_yaml(tmp_path):
    config = load_config(write(tmp_path, MINIMAL), [
        "generation.max_output_length=64", "generation.do_sample=true", "generation.random_seed=5",
        'generation.stop_strings=["\\n\\n"]', "output.mode=overwrite", "spark.conf.spark.task.cpus=2",
    ])
    assert config.generation.params() == GenerationParams(
        max_output_length=64, do_sample=True, random_seed=5, stop_strings=("\n\n",)
    )
    assert config.output.mode == "overwrite"
    assert config.spark.conf == {"spark.task.cpus": 2}


def test_unknown_key_is_named_with_the_file(tmp_path):
    path = write(tmp_path, MINIMAL + "generation: {max_tokens: 5}\n")
    with pytest.raises(ConfigError, match=r"job.yaml: unknown key 'generation.max_tokens'.*max_output_length"):
        load_config(path)


def test_unknown_section_is_named(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'modle'"):
        load_config(write(tmp_path, MINIMAL + "modle: {}\n"))


def test_wrong_type_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"generation.max_output_length must be int, got 'many'"):
        load_config(write(tmp_path, MINIMAL), ["generation.max_output_length=many"])


def test_bad_value_is_named_by_its_config_key(tmp_path):
    with pytest.raises(ConfigError, match=r"generation.top_p: topP must be a number in \(0, 1\]"):
        load_config(write(tmp_path, MINIMAL), ["generation.top_p=1.5"])
    with pytest.raises(ConfigError, match="output.mode must be one of error, overwrite, resume"):
        load_config(write(tmp_path, MINIMAL), ["output.mode=append"])
    with pytest.raises(ConfigError, match="model.kv_cache_gb must be a whole number of GiB >= 1, got 0"):
        load_config(write(tmp_path, MINIMAL), ["model.kv_cache_gb=0"])


def test_required_keys_are_named(tmp_path):
    with pytest.raises(ConfigError, match="input.path is required"):
        load_config(write(tmp_path, "model: {source: x}\noutput: {path: o}\n"))


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "input: [unclosed\n"))


def test_malformed_override(tmp_path):
    with pytest.raises(ConfigError, match="expected section.key=value"):
        load_config(write(tmp_path, MINIMAL), ["generation.max_output_length"])


def test_stop_preset_combines_with_stop_strings(tmp_path):
    config = load_config(write(tmp_path, MINIMAL), ["generation.stop_preset=python", 'generation.stop_strings=["###"]'])
    stops = config.generation.params().stop_strings
    assert stops[:2] == ("\ndef ", "\nclass ") and stops[-1] == "###"
    with pytest.raises(ConfigError, match="generation.stop_preset.*python"):
        load_config(write(tmp_path, MINIMAL), ["generation.stop_preset=cobol"])
