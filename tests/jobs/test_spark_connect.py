"""The jobs and the quickstart notebook on a Spark Connect session (pyspark's own local server,
`SPARK_REMOTE=local[2]`: no SparkContext, no JVM on the client) write what they write on a
classic session."""

import json
import shutil

import pandas as pd
import pytest
from test_entry_points import run

from pipelines.models import bundled

pytestmark = pytest.mark.slow  # end to end: the jobs and a notebook on a Spark Connect server

CONNECT = {"SPARK_REMOTE": "local[2]"}
GENERATION_COLUMNS = ["id", "completion", "prompt_tokens", "completion_tokens", "finish_reason", "truncated", "error"]
SAMPLE_CORPUS = bundled.SAMPLE_PROMPTS


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Every 8th row of the bundled sample corpus (46 of 367: both kinds, prompts of 133 to 1,555
    characters): what the session type could change shows on a few rows; the embedded default's full
    runs are in test_entry_points and test_score_job."""
    path = tmp_path_factory.mktemp("corpus") / "prompts.parquet"
    pd.read_parquet(SAMPLE_CORPUS).iloc[::8].to_parquet(path, index=False)
    return path


def generate(out, env=None, *settings, corpus):
    result = run(["jobs/generate.py", "--conf", "conf/local.yaml", "--set", f"input.path={corpus}",
                  "--set", f"output.path={out}", "--set", "generation.max_output_length=8", *settings], env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def rows(path, columns):
    return pd.read_parquet(path)[columns].sort_values(columns[0]).reset_index(drop=True)


@pytest.fixture(scope="module")
def classic_generations(tmp_path_factory, corpus):
    out = tmp_path_factory.mktemp("classic") / "generations"
    generate(out, corpus=corpus)
    return out


def test_generation_job_on_spark_connect_writes_what_a_classic_session_writes(classic_generations, corpus, tmp_path):
    out = tmp_path / "generations"
    result = generate(out, CONNECT, corpus=corpus)
    assert "SparkContext" not in result.stderr
    pd.testing.assert_frame_equal(rows(out, GENERATION_COLUMNS), rows(classic_generations, GENERATION_COLUMNS))
    for marker in ("_SUCCESS", "_job.json", "_summary.json"):
        assert (out / marker).is_file(), marker
    summary, classic = (json.loads((d / "_summary.json").read_text()) for d in (out, classic_generations))
    assert summary["rows_out"] == classic["rows_out"] and summary["completion_tokens"] == classic["completion_tokens"]
    assert json.loads((out / "_job.json").read_text()) == json.loads((classic_generations / "_job.json").read_text())


def test_resume_on_spark_connect_writes_only_the_missing_shard(classic_generations, corpus, tmp_path):
    out = tmp_path / "generations"
    generate(out, CONNECT, "--set", "output.mode=resume", corpus=corpus)
    shutil.rmtree(out / "shard=00002")  # as if the run had been killed while writing it
    (out / "_SUCCESS").unlink()
    result = generate(out, CONNECT, "--set", "output.mode=resume", corpus=corpus)
    assert "1 of 4 shards to write" in result.stderr
    pd.testing.assert_frame_equal(rows(out, GENERATION_COLUMNS), rows(classic_generations, GENERATION_COLUMNS))
    assert (out / "_SUCCESS").is_file()


def test_scoring_job_on_spark_connect_writes_what_a_classic_session_writes(corpus, tmp_path):
    columns = ["id", "tokens", "windows", "logprob", "perplexity", "error"]
    tables = {}
    for name, env in (("classic", None), ("connect", CONNECT)):
        out = tmp_path / name
        result = run(["jobs/score.py", "--conf", "conf/score-local.yaml", "--set", f"input.path={corpus}",
                      "--set", f"output.path={out}", "--set", "scoring.max_input_length=64", "--set", "scoring.stride=32"], env=env)
        assert result.returncode == 0, result.stderr[-3000:]
        assert (out / "_SUCCESS").is_file() and (out / "_summary.json").is_file()
        tables[name] = rows(out, columns)
    pd.testing.assert_frame_equal(tables["connect"], tables["classic"])


def test_corpus_job_on_spark_connect_writes_what_a_classic_session_writes(tmp_path):
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    (src / "pkg" / "geo.py").write_text("def area(r):\n    s = r * r\n    return 3.14 * s\n\n\n"
                                        "def volume(r, h):\n    base = area(r)\n    return base * h\n")
    (src / "util.js").write_text("function f(a) {\n  const b = a;\n  return b;\n}\n")
    outputs = {}
    for name, env in (("classic", None), ("connect", CONNECT)):
        result = run(["jobs/prepare_corpus.py", "--source-dir", str(src), "--out", str(tmp_path / name),
                      "--master", "local[1]"], env=env)
        assert result.returncode == 0, result.stderr[-3000:]
        outputs[name] = {t: pd.read_parquet(tmp_path / name / f"{t}.parquet").sort_values("id").reset_index(drop=True)
                         for t in ("prompts", "fim")}
    for table in ("prompts", "fim"):
        assert len(outputs["classic"][table]) > 0
        pd.testing.assert_frame_equal(outputs["connect"][table], outputs["classic"][table])


def test_evaluation_job_on_spark_connect_checks_canonical_solutions_as_classic(tmp_path):
    summaries = {}
    for name, env in (("classic", None), ("connect", CONNECT)):
        result = run(["jobs/evaluate.py", "--conf", "conf/local.yaml", "--canonical", "--limit", "12",
                      "--out", str(tmp_path / name)], env=env)
        assert result.returncode == 0, result.stderr[-3000:]
        summaries[name] = json.loads((tmp_path / name / "summary.json").read_text())
    assert summaries["connect"]["passed_problems"] == summaries["classic"]["passed_problems"] == 12
    columns = ["task_id", "status", "passed"]
    pd.testing.assert_frame_equal(rows(tmp_path / "connect" / "samples.parquet", columns),
                                  rows(tmp_path / "classic" / "samples.parquet", columns))


def test_quickstart_notebook_on_spark_connect():
    result = run(["notebooks/quickstart.py"], env=CONNECT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "def add(a, b):" in result.stdout
