"""The HumanEval harness: pass@k, the sandbox's containment, and the checks on real Spark."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from pipelines.evaluation.humaneval import (
    check_completions,
    pass_at_k,
    per_problem,
    problems_frame,
)
from pipelines.evaluation.sandbox import PROJECT_ROOT, SandboxLimits, run_program

LIMITS = SandboxLimits(timeout_s=3, cpu_s=3, memory_mb=512)
LOCAL_CONF = Path(__file__).resolve().parents[2] / "conf" / "local.yaml"


def test_pass_at_k_is_the_unbiased_estimator():
    assert pass_at_k(10, 0, 1) == 0.0
    assert pass_at_k(10, 10, 1) == 1.0
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)
    assert pass_at_k(10, 3, 5) == pytest.approx(1 - 21 / 252)
    assert pass_at_k(3, 1, 3) == 1.0
    with pytest.raises(ValueError, match="at least 5 samples"):
        pass_at_k(2, 1, 5)


@pytest.mark.parametrize(
    "program,status,detail",
    [
        ("print(1)", "passed", ""),
        ("assert 1 == 2", "failed", "AssertionError in the solution, line 1"),
        ("while True:\n    pass", "timeout", ""),  # CPU limit or wall clock, whichever is first
        ("import time\ntime.sleep(60)", "timeout", "killed after 3"),
        ("x = bytearray(4 * 1024 ** 3)", "failed", "MemoryError in the solution, line 1"),
        ("import socket\ns = socket.socket()\ns.connect(('127.0.0.1', 9))", "failed", "PermissionError"),
        ("import urllib.request\nurllib.request.urlopen('http://127.0.0.1:9')", "failed", "OSError subclass"),
        (f"open({str(PROJECT_ROOT / 'setup.py')!r}).read()", "failed", "PermissionError"),
        ("open('/tmp/sandbox-escape.txt', 'w').write('x')", "failed", "PermissionError in the solution, line 1"),
        ("open('scratch.txt', 'w').write('ok')\nassert open('scratch.txt').read() == 'ok'", "passed", ""),
        ("import subprocess\nsubprocess.run(['true'])", "failed", "PermissionError in the solution, line 2"),
        ("import os\nos.system('true')", "failed", "PermissionError in the solution, line 2"),
        ("def f(:\n    pass", "failed", "SyntaxError in the solution, line 1"),
    ],
)
def test_sandbox_contains_the_program(program, status, detail):
    result = run_program(program, LIMITS)
    assert result.status == status, result
    assert detail in result.detail
    assert not Path("/tmp/sandbox-escape.txt").exists()


@pytest.mark.slow
def test_canonical_solutions_pass_164_of_164(spark):
    problems = problems_frame(spark)
    samples = problems.select("task_id", "prompt", "test", "entry_point", F.col("canonical").alias("completion"))
    checked = check_completions(samples.repartition(4), SandboxLimits(timeout_s=20, cpu_s=20)).cache()
    failures = checked.where(~F.col("passed")).select("task_id", "status", "detail").collect()
    assert failures == [] and checked.count() == 164
    assert {r["sandbox"] for r in checked.select("sandbox").distinct().collect()} == {"bwrap"}
    scores = per_problem(checked, [1])
    assert len(scores) == 164 and scores["pass@1"].mean() == 1.0


def test_broken_solutions_fail(spark):
    problems = problems_frame(spark, limit=40)
    broken = problems.select(
        "task_id", "prompt", "test", "entry_point",
        F.lit("    raise NotImplementedError\n").alias("completion"),
    )
    checked = check_completions(broken.repartition(2), LIMITS)
    assert checked.where(F.col("passed")).count() == 0
    assert checked.where(F.col("detail").contains("NotImplementedError")).count() == 40


@pytest.mark.slow
def test_evaluate_job_end_to_end(tmp_path):
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "jobs/evaluate.py", "--conf", "conf/local.yaml", "--out", str(tmp_path / "he"),
         "--samples", "2", "--k", "1,2", "--limit", "6", "--set", "generation.max_output_length=24"],
        cwd=root, capture_output=True, text=True, timeout=600, env=dict(os.environ),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "he" / "summary.json").read_text())
    assert summary["problems"] == 6 and summary["samples_per_problem"] == 2
    assert 0.0 <= summary["pass@1"] <= summary["pass@2"] <= 1.0
    assert sum(summary["statuses"].values()) == 12
    assert summary["sandbox"].startswith("bubblewrap: new network, PID, IPC, UTS and mount namespaces")
    assert summary["sandbox"].endswith("(12 checks)")
    import pandas as pd

    samples = pd.read_parquet(tmp_path / "he" / "samples.parquet")
    assert len(samples) == 12 and set(samples["sample"]) == {0, 1}
    assert samples.groupby("task_id")["completion"].nunique().max() == 2  # two distinct samples each


def test_evaluate_job_refuses_without_kernel_isolation(monkeypatch, capsys, tmp_path):
    from pipelines.evaluation import isolation, sandbox
    from pipelines.jobs import evaluate

    monkeypatch.setattr(isolation, "find", lambda tool: None)
    sandbox.probe.cache_clear()
    try:
        code = evaluate.main(["--conf", str(LOCAL_CONF), "--canonical", "--out", str(tmp_path / "he")])
    finally:
        sandbox.probe.cache_clear()
    assert code == 2
    message = capsys.readouterr().err
    assert "refusing to run generated code" in message and "bwrap is not installed" in message
    assert "apt-get install bubblewrap" in message and "--allow-weak-sandbox" in message
    assert not (tmp_path / "he").exists()


def test_weak_mode_is_named_in_the_summary():
    from pipelines.jobs.evaluate import sandbox_summary

    assert sandbox_summary({"weak": 3}).startswith("WEAK: in-process guard only")
    assert "no kernel isolation" in sandbox_summary({"weak": 3}) and "(3 checks)" in sandbox_summary({"weak": 3})


def test_evaluation_config_section():
    from pipelines.jobs.config import ConfigError, load_config

    config = load_config(LOCAL_CONF, ["evaluation.allow_weak_sandbox=true", "evaluation.hidden_paths=[/data]"])
    assert config.evaluation.allow_weak_sandbox is True and config.evaluation.hidden_paths == ["/data"]
    assert load_config(LOCAL_CONF).evaluation.allow_weak_sandbox is False
    with pytest.raises(ConfigError, match="evaluation.hidden_paths must hold absolute paths"):
        load_config(LOCAL_CONF, ["evaluation.hidden_paths=[data]"])
