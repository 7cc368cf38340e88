"""model.export: the job exports the model once on the driver, with the exporter environment it
builds from CPU wheels, and runs the export on the openvino engine."""

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from pipelines.jobs import generate as generation_job
from pipelines.jobs.config import ConfigError, config_from_dict
from pipelines.jobs.sharded_job import job_model
from pipelines.models import bundled


def job_config(tmp_path, source, out="out", **model):
    prompts = list(pd.read_parquet(bundled.SAMPLE_PROMPTS).sort_values("id")["prompt"])[:6]
    table = tmp_path / "prompts.parquet"
    pd.DataFrame({"id": [f"p{i}" for i in range(len(prompts))], "text": prompts}).to_parquet(table)
    return config_from_dict({
        "input": {"path": str(table)},
        "model": {"source": str(source), **model},
        "generation": {"max_output_length": 8, "return_full_text": False},
        "output": {"path": str(tmp_path / out), "shards": 1},
    }), prompts


class ClusterSession:
    """What job_model reads of a session on a cluster: its master."""

    class conf:
        @staticmethod
        def get(key, default=None):
            return "spark://127.0.0.1:7077" if key == "spark.master" else default


def test_an_unknown_export_format_is_refused_by_the_config(tmp_path):
    with pytest.raises(ConfigError, match="model.export must be one of openvino-int8, openvino-int4, openvino-fp16"):
        job_config(tmp_path, bundled.DEMO_MODEL, export="int8")


def test_export_needs_safetensors_and_a_shared_directory_on_a_cluster(tmp_path):
    config, _ = job_config(tmp_path, bundled.DEMO_MODEL_OPENVINO, export="openvino-int8")
    with pytest.raises(ConfigError, match="has none \\(an export or a GGUF file runs as it is: unset model.export\\)"):
        job_model(ClusterSession(), config)
    config, _ = job_config(tmp_path, bundled.DEMO_MODEL, export="openvino-int8")
    with pytest.raises(ConfigError, match="on a cluster \\(spark://127.0.0.1:7077\\) set model.export_dir to a directory "
                                          "every worker reads"):
        job_model(ClusterSession(), config)


@pytest.mark.slow
def test_the_job_exports_once_and_runs_the_export_on_openvino(spark, tmp_path):
    """Builds the exporter environment (from the package index) on first use: minutes, once per machine."""
    from pipelines.engine.engine import GenerationEngine
    from pipelines.engine.params import GenerationParams, ModelSpec

    model = shutil.copytree(bundled.DEMO_MODEL, tmp_path / "model")
    exports = tmp_path / "exports"
    config, prompts = job_config(tmp_path, model, export="openvino-int8", export_dir=str(exports))
    generation_job.run(spark, config)
    [export] = list(exports.iterdir())
    marker = json.loads((export / "export.json").read_text())
    assert marker["export"] == "openvino-int8" and marker["source"] == str(model)
    xml = (export / "openvino_model.xml").read_text()
    assert 'element_type="i8"' in xml or 'element_type="u8"' in xml  # int8 weights
    rows = pd.read_parquet(tmp_path / "out").sort_values("id")
    expected = GenerationEngine.load(ModelSpec(source=str(export))).complete(
        prompts, GenerationParams(max_output_length=8, return_full_text=False))
    assert list(rows["completion"]) == [row[0].text for row in expected]
    summary = json.loads((tmp_path / "out" / "_summary.json").read_text())
    assert summary["model"] == str(export)

    stamp = (export / "export.json").stat().st_mtime_ns
    again, _ = job_config(tmp_path, model, out="out2", export="openvino-int8", export_dir=str(exports))
    generation_job.run(spark, again)
    assert list(exports.iterdir()) == [export] and (export / "export.json").stat().st_mtime_ns == stamp
    assert list(pd.read_parquet(tmp_path / "out2").sort_values("id")["completion"]) == list(rows["completion"])
    assert Path(export).is_dir()
