"""Failures of the Python workers that run the model, told as their causes.

A worker that the kernel kills for memory (or that crashes) leaves Spark with nothing but
"Python worker exited unexpectedly (crashed)". Each task therefore leaves a note in the file
Spark's fault handler keeps for its worker: what the worker runs and its memory plan. Spark
deletes that file when the task ends normally, and puts its text into the error when the worker
dies. The job also turns such errors into a sentence; a worker that runs another interpreter,
where this package or its dependencies are missing, is caught on the driver before any task.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from functools import lru_cache

FAULTHANDLER_CONF = "spark.sql.execution.pyspark.udf.faulthandler.enabled"
_CRASH_SIGNS = ("Python worker exited unexpectedly", "crashed", "Python worker died",
                "Connection reset", "EOFException")
NOTE_MARK = "starcoder-pipelines:"


class WorkerEnvironmentError(RuntimeError):
    """The Python workers cannot import what the model needs; the message says how to fix it."""


class WorkerCrashError(RuntimeError):
    """A Python worker running the model died; the message names the likely cause."""


def enable_crash_reports(spark) -> None:
    """Ask Spark to report what a dying Python worker left in its fault-handler file."""
    try:
        spark.conf.set(FAULTHANDLER_CONF, "true")
    except Exception:  # a session that refuses runtime conf keeps Spark's plain message
        pass


def leave_crash_note(text: str) -> None:
    """In a task: the sentence Spark shows if this worker dies before the task ends."""
    directory = os.environ.get("PYTHON_FAULTHANDLER_DIR")
    if not directory:
        return
    try:
        with open(os.path.join(directory, str(os.getpid())), "a", encoding="utf-8") as f:
            f.write(f"{NOTE_MARK} {text}\n")
    except OSError:
        pass


def crash_note(model_source: str, dtype: str, plan: str) -> str:
    figures = f" Memory plan: {plan}." if plan else ""
    return (
        f"this Python worker was running the model {model_source} ({dtype}) when it died. The likely "
        f"cause is memory: the kernel ends the largest process when a machine runs out.{figures} "
        "Run fewer tasks at once per executor (raise spark.task.cpus), use dtype int8, or lower "
        "kvCacheSizeGB / maxBatchTokens."
    )


def explain_failure(error: BaseException, plan: str) -> str | None:
    """A sentence for a Spark job failure caused by a dead worker or a missing module, else None."""
    text = str(error)
    if "No module named" in text:
        module = text.split("No module named", 1)[1].split("\n", 1)[0].strip(" '\"")
        return (
            f"the Python workers cannot import {module!r}: they run another interpreter than this "
            f"driver ({sys.executable}) or lack this package. Set PYSPARK_PYTHON (spark.pyspark.python) "
            "to an interpreter where starcoder-pipelines is installed, on every worker"
        )
    if any(sign in text for sign in _CRASH_SIGNS):
        left = [line.split(NOTE_MARK, 1)[1].strip() for line in text.splitlines() if NOTE_MARK in line]
        cause = left[0] if left else (
            "the likely cause is memory: the kernel ends the largest process when a machine runs out"
            + (f". Memory plan: {plan}" if plan else "")
            + ". Run fewer tasks at once per executor (raise spark.task.cpus), use dtype int8, or lower "
            "kv_cache_gb / max_batch_tokens"
        )
        return f"a Python worker running the model died ({text.splitlines()[0][:200]}): {cause}"
    return None


def worker_python(spark) -> str:
    """The interpreter a local session starts its Python workers with."""
    try:
        return spark.sparkContext.pythonExec
    except Exception:  # Spark Connect: no SparkContext on the client
        return spark.conf.get("spark.pyspark.python", None) or os.environ.get("PYSPARK_PYTHON", "python3")


def check_worker_python(spark) -> None:
    """In local mode, check that the workers' interpreter imports what the model needs."""
    master = spark.conf.get("spark.master", "") or ""
    if not master.startswith("local"):
        return  # executors run elsewhere: the job's error handling explains a failure there
    python = worker_python(spark)
    problem = _import_problem(python, os.environ.get("PYTHONPATH", ""))
    if problem:
        raise WorkerEnvironmentError(
            f"Spark starts its Python workers with {python!r}, which {problem}. Set "
            f"os.environ['PYSPARK_PYTHON'] = sys.executable ({sys.executable}) before creating the "
            "SparkSession, or install starcoder-pipelines in that interpreter"
        )


@lru_cache(maxsize=8)
def _import_problem(python: str, pythonpath: str) -> str | None:
    resolved = shutil.which(python)
    if resolved is None:
        return "is not found on PATH"
    if os.path.abspath(resolved) == os.path.abspath(sys.executable):
        return None  # (a virtualenv's python links to its base: only the same path is the same)
    code = ("import importlib.util, sys\n"
            "missing = [m for m in ('pyarrow', 'pipelines', 'torch') if importlib.util.find_spec(m) is None]\n"
            "print(','.join(missing))")
    try:
        out = subprocess.run([resolved, "-c", code], capture_output=True, text=True, timeout=60,
                             env={**os.environ, "PYTHONPATH": pythonpath})
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"cannot be run ({e})"
    missing = out.stdout.strip()
    if out.returncode != 0:
        return f"fails to start ({out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode})"
    return f"cannot import {missing.replace(',', ', ')}" if missing else None
