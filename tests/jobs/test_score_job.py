"""The scoring job on real Spark: flat columns, sharded output, resume, summary, entry point."""

import json
import math
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from pipelines.engine.params import InvalidParamError, ScoringParams
from pipelines.engine.scoring import DocumentScorer
from pipelines.jobs import score as scoring_job
from pipelines.jobs.config import ConfigError, config_from_dict
from pipelines.jobs.sharded_output import OutputExistsError
from pipelines.models import bundled

ROOT = Path(__file__).resolve().parents[2]
N_ROWS = 24


def text_of(i: int) -> str:
    if i == 0:
        return ""
    return "".join(f"def f{i}_{k}(x):\n    return x * {k}\n\n" for k in range(1 + i % 7))


@pytest.fixture(scope="module")
def corpus(spark, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("corpus") / "docs.parquet")
    rows = [(f"doc-{i}", text_of(i), "python") for i in range(N_ROWS)]
    spark.createDataFrame(rows, "id string, text string, language string").repartition(3).write.parquet(path)
    return path


def job_config(input_path, output_path, model_dir, **overrides):
    data = {
        "input": {"path": input_path, "id_col": "id", "text_col": "text", "passthrough_cols": ["language"]},
        "model": {"source": str(model_dir)},
        "scoring": {"max_input_length": 48, "batch_size": 4},
        "output": {"path": output_path, "shards": 3},
    }
    for dotted, value in overrides.items():
        section, key = dotted.split("__")
        data[section][key] = value
    return config_from_dict(data)


def test_job_writes_every_document_once_with_its_score_and_a_summary(spark, corpus, tiny_model_dir, engine,
                                                                      tmp_path):
    out = tmp_path / "out"
    summary = scoring_job.run(spark, job_config(corpus, str(out), tiny_model_dir))
    df = spark.read.parquet(str(out))
    assert {"id", "language", "perplexity", "mean_logprob", "logprob", "tokens", "windows", "error",
            "request", "cached", "request_seconds", "shard"} == set(df.columns)
    collected = df.collect()
    assert Counter(r.id for r in collected) == Counter(f"doc-{i}" for i in range(N_ROWS))
    rows = {r.id: r for r in collected}
    expected = DocumentScorer.from_engine(engine).score([text_of(i) for i in range(N_ROWS)],
                                                        ScoringParams(max_input_length=48))
    for i, score in enumerate(expected):
        r = rows[f"doc-{i}"]
        assert (r.tokens, r.windows, r.error, r.language) == (score.tokens, score.windows, None, "python")
        if score.scored_tokens:
            assert math.isclose(r.perplexity, score.perplexity, rel_tol=1e-5)
            assert math.isclose(r.mean_logprob, score.mean_logprob, rel_tol=1e-5)
        else:
            assert r.perplexity is None and r.mean_logprob is None and r.logprob == 0.0
    assert max(r.windows for r in rows.values()) > 1  # the longer documents take several windows

    written = json.loads((out / "_summary.json").read_text())
    assert written["rows_in"] == written["rows_out"] == N_ROWS and written["rows_with_errors"] == 0
    assert written["rows_without_perplexity"] == 1  # the empty document
    assert written["tokens"] == sum(s.tokens for s in expected) == summary.tokens
    perplexities = sorted(s.perplexity for s in expected if s.scored_tokens)
    q = written["perplexity_quantiles"]
    assert math.isclose(q["min"], perplexities[0], rel_tol=1e-3) and math.isclose(q["max"], perplexities[-1],
                                                                                   rel_tol=1e-3)
    assert q["min"] <= q["p25"] <= q["p50"] <= q["p75"] <= q["max"]
    scored = sum(s.scored_tokens for s in expected)
    assert math.isclose(written["corpus_perplexity"], math.exp(-sum(s.logprob for s in expected) / scored),
                        rel_tol=1e-4)
    assert written["tokens_per_second"] > 0 and (out / "_SUCCESS").exists()
    assert "perplexity quantiles" in summary.table() and f"{N_ROWS} / {N_ROWS}" in summary.table()


def test_resume_writes_only_the_missing_shards_and_refuses_other_settings(spark, corpus, tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    scoring_job.run(spark, job_config(corpus, str(out), tiny_model_dir))
    first = {r.id: r.perplexity for r in spark.read.parquet(str(out)).collect()}
    os.remove(out / "_SUCCESS")
    for marker in (out / "shard=00001" / "_SUCCESS",):
        os.remove(marker)
    resumed = scoring_job.run(spark, job_config(corpus, str(out), tiny_model_dir, output__mode="resume"))
    assert resumed.shards_written_this_run == 1
    again = {r.id: r.perplexity for r in spark.read.parquet(str(out)).collect()}
    assert again.keys() == first.keys()
    with pytest.raises(OutputExistsError, match="scoring"):
        scoring_job.run(spark, job_config(corpus, str(out), tiny_model_dir, output__mode="resume",
                                          scoring__stride=8))


def test_job_refuses_openvino_and_fim_columns_before_writing(spark, corpus, tmp_path):
    with pytest.raises(InvalidParamError, match="no logits for prompt tokens"):
        scoring_job.run(spark, job_config(corpus, str(tmp_path / "o"), bundled.DEMO_MODEL_OPENVINO))
    assert not (tmp_path / "o").exists()
    with pytest.raises(ConfigError, match="input.prefix_col"):
        scoring_job.run(spark, job_config(corpus, str(tmp_path / "o"), bundled.DEMO_MODEL,
                                          input__prefix_col="a", input__suffix_col="b"))


def test_bad_scoring_config_is_named_by_key():
    with pytest.raises(ConfigError, match="scoring.stride"):
        job_config("in", "out", "model", scoring__stride=48)


@pytest.mark.slow
def test_score_job_on_the_embedded_default(tmp_path):
    out = tmp_path / "scores"
    result = subprocess.run(
        [sys.executable, "jobs/score.py", "--conf", "conf/score-local.yaml", "--set", f"output.path={out}",
         "--set", "output.mode=error"],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "perplexity quantiles" in result.stdout
    corpus = pd.read_parquet(bundled.SAMPLE_PROMPTS)
    written = pd.read_parquet(out)
    assert sorted(written["id"]) == sorted(corpus["id"])
    assert written["perplexity"].notna().all() and (written["perplexity"] > 1).all()
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["rows_in"] == summary["rows_out"] == len(corpus)
    assert summary["tokens"] == written["tokens"].sum() > 0
    assert "partition" in result.stderr and "tokens/s" in result.stderr  # per-partition progress lines


def test_a_document_whose_scoring_fails_is_kept_with_its_error_or_fails_the_job(spark, tiny_model_dir, tmp_path,
                                                                                 inject_faults):
    path = str(tmp_path / "docs.parquet")
    texts = ["def ok(x):\n    return x\n", "x = 'BOOM'\n", "import os\n"]
    spark.createDataFrame([(f"d{i}", t) for i, t in enumerate(texts)], "id string, text string").write.parquet(path)
    inject_faults(fail_prompt_containing="BOOM")
    summary = scoring_job.run(spark, job_config(path, str(tmp_path / "keep"), tiny_model_dir,
                                                input__passthrough_cols=[], output__on_error="keep"))
    rows = {r.id: r for r in spark.read.parquet(str(tmp_path / "keep")).collect()}
    assert "BOOM" in rows["d1"].error and rows["d1"].perplexity is None
    assert rows["d0"].error is None and rows["d0"].perplexity > 1 and rows["d2"].perplexity > 1
    assert summary.rows_with_errors == 1 and summary.rows_without_perplexity == 1
    with pytest.raises(Exception, match="scoring failed for the row with id d1"):
        scoring_job.run(spark, job_config(path, str(tmp_path / "fail"), tiny_model_dir,
                                          input__passthrough_cols=[], output__on_error="fail"))
