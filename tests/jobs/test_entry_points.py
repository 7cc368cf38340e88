"""The jobs and notebooks run end to end as a user runs them: as programs, on real Spark."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from pipelines.models import bundled

pytestmark = pytest.mark.slow  # end to end: the jobs and notebooks as programs, spark-submit

ROOT = Path(__file__).resolve().parents[2]


def run(args, env=None, timeout=600):
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def test_generate_job_on_the_embedded_default(tmp_path):
    out = tmp_path / "generations"
    result = run(["jobs/generate.py", "--conf", "conf/local.yaml", "--set", f"output.path={out}",
                  "--set", "output.mode=error", "--set", "generation.max_output_length=8"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rows in / out" in result.stdout
    corpus = pd.read_parquet(bundled.SAMPLE_PROMPTS)
    written = pd.read_parquet(out)
    assert sorted(written["id"]) == sorted(corpus["id"])
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["rows_in"] == summary["rows_out"] == len(corpus) >= 256
    assert summary["completion_tokens"] == written["completion_tokens"].sum() > 0
    assert "partition" in result.stderr and "tokens/s" in result.stderr  # per-partition progress lines


def test_generate_job_rejects_a_bad_config_by_key(tmp_path):
    result = run(["jobs/generate.py", "--conf", "conf/local.yaml", "--set", "generation.top_p=2"])
    assert result.returncode == 2
    assert "generation.top_p" in result.stderr and "conf/local.yaml" in result.stderr


def test_prepare_corpus_job_on_a_directory(tmp_path):
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    (src / "pkg" / "geo.py").write_text("def area(r):\n    s = r * r\n    return 3.14 * s\n")
    (src / "util.js").write_text("function f(a) {\n  const b = a;\n  return b;\n}\n")
    result = run(["jobs/prepare_corpus.py", "--source-dir", str(src), "--out", str(tmp_path / "c"),
                  "--master", "local[1]"])
    assert result.returncode == 0, result.stderr[-3000:]
    prompts = pd.read_parquet(tmp_path / "c" / "prompts.parquet")
    assert set(prompts["id"]) == {"completion/pkg/geo.py/area", "completion/util.js/L2"}
    fim = pd.read_parquet(tmp_path / "c" / "fim.parquet")
    geo = (src / "pkg" / "geo.py").read_text()
    for row in fim[fim["language"] == "python"].itertuples():
        assert row.prefix + row.middle + row.suffix in geo


@pytest.mark.parametrize("notebook", ["quickstart", "batch_generation", "fill_in_the_middle"])
def test_notebook_runs_locally(notebook, tmp_path):
    result = run([f"notebooks/{notebook}.py"], env={"STARCODER_OUTPUT": str(tmp_path / "out")})
    assert result.returncode == 0, result.stderr[-3000:]
    if notebook == "quickstart":
        assert "def add(a, b):" in result.stdout
    else:
        assert "rows in / out" in result.stdout
        assert (tmp_path / "out" / "_SUCCESS").exists()
    if notebook == "fill_in_the_middle":
        assert "FIM python" in result.stdout


def test_notebooks_are_databricks_source_files():
    for path in (ROOT / "notebooks").glob("*.py"):
        text = path.read_text()
        assert text.startswith("# Databricks notebook source\n"), path
        assert "# COMMAND ----------" in text, path


def test_spark_submit_runs_the_job(tmp_path):
    import pyspark

    submit = Path(pyspark.__file__).parent / "bin" / "spark-submit"
    result = subprocess.run(
        [str(submit), "--master", "local[2]", "jobs/generate.py", "--conf", "conf/local.yaml",
         "--set", f"output.path={tmp_path / 'o'}", "--set", "generation.max_output_length=4",
         "--set", "spark.master=null"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYSPARK_PYTHON": sys.executable, "SPARK_HOME": str(submit.parent.parent)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "o" / "_summary.json").read_text())
    assert summary["master"] == "local[2]" and summary["rows_out"] == summary["rows_in"]


def test_local_sessions_listen_on_loopback_only(spark):
    from pipelines.jobs.session import with_master

    class Recorder:
        def __init__(self):
            self.conf = {}

        def master(self, master):
            self.conf["master"] = master
            return self

        def config(self, key, value):
            self.conf[key] = value
            return self

    local = with_master(Recorder(), "local[2]").conf
    assert local == {"master": "local[2]", "spark.driver.bindAddress": "127.0.0.1", "spark.driver.host": "127.0.0.1"}
    # A cluster's executors must reach the driver.
    assert with_master(Recorder(), "spark://10.0.0.5:7077").conf == {"master": "spark://10.0.0.5:7077"}
    assert with_master(Recorder(), None).conf == {}
    assert os.environ["SPARK_LOCAL_IP"] == "127.0.0.1"
    conf = spark.sparkContext.getConf()
    assert conf.get("spark.driver.host") == "127.0.0.1" and conf.get("spark.driver.bindAddress") == "127.0.0.1"
