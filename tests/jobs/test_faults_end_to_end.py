"""Faults a long job meets: the driver killed mid-run, and a worker lost on a real standalone cluster."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyspark
import pytest
import yaml

pytestmark = pytest.mark.slow  # end to end: a killed driver, a lost worker of a standalone cluster

ROOT = Path(__file__).resolve().parents[2]
SPARK_HOME = Path(pyspark.__file__).parent
N_ROWS = 48


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "in.parquet"
    pd.DataFrame({"id": [f"r{i}" for i in range(N_ROWS)], "prompt": [f"def f{i}(x):" for i in range(N_ROWS)]}) \
        .to_parquet(path)
    return path


def write_config(tmp_path, corpus, model_dir, out, master, mode="error", faults=None):
    spark_conf = {"spark.ui.enabled": "false", "spark.task.maxFailures": "4"}
    if faults:  # executors of a cluster do not inherit the driver's environment
        spark_conf["spark.executorEnv.STARCODER_PIPELINES_FAULTS"] = json.dumps(faults)
    config = {
        "spark": {"master": master, "conf": spark_conf},
        "input": {"path": str(corpus), "id_col": "id", "text_col": "prompt"},
        "model": {"source": str(model_dir)},
        "generation": {"max_output_length": 4, "batch_size": 8},
        "output": {"path": str(out), "mode": mode, "shards": 6, "partitions_per_shard": 2},
    }
    path = tmp_path / f"job-{mode}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def start_job(conf, faults=None, env=None):
    full_env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", **(env or {})}
    full_env["STARCODER_PIPELINES_FAULTS"] = json.dumps(faults or {})
    return subprocess.Popen(
        [sys.executable, "jobs/generate.py", "--conf", str(conf)], cwd=ROOT, env=full_env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )


def wait_for(predicate, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def committed_shards(out: Path) -> list[str]:
    return sorted(p.parent.name for p in out.glob("shard=*/_SUCCESS"))


def test_driver_killed_then_resumed_completes_without_redoing_finished_shards(tmp_path, corpus, tiny_model_dir):
    out = tmp_path / "out"
    slow = {"slow_partition_s": 1.0}
    job = start_job(write_config(tmp_path, corpus, tiny_model_dir, out, "local[2]", faults=slow), faults=slow)
    try:
        wait_for(lambda: len(committed_shards(out)) >= 2 or job.poll() is not None, 300, "two committed shards")
        assert job.poll() is None, job.stderr.read()[-2000:]
        os.killpg(job.pid, signal.SIGKILL)  # the driver and everything it started
        job.wait(30)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    done_before = committed_shards(out)
    assert 2 <= len(done_before) < 6 and not (out / "_SUCCESS").exists()

    resumed = subprocess.run(
        [sys.executable, "jobs/generate.py", "--conf", str(write_config(tmp_path, corpus, tiny_model_dir, out,
                                                                       "local[2]", mode="resume"))],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"},
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["shards_written_this_run"] == 6 - len(done_before)
    assert summary["completion_tokens_this_run"] < summary["completion_tokens"]
    ids = pd.read_parquet(out)["id"].tolist()
    assert sorted(ids) == sorted(f"r{i}" for i in range(N_ROWS))


class StandaloneCluster:
    """A Spark master and two workers on 127.0.0.1, started from the pyspark wheel's scripts."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.port = free_port()
        self.env = {
            **os.environ, "SPARK_HOME": str(SPARK_HOME), "SPARK_LOCAL_IP": "127.0.0.1",
            "SPARK_PID_DIR": str(workdir / "pids"), "SPARK_LOG_DIR": str(workdir / "logs"),
            "SPARK_WORKER_DIR": str(workdir / "work"), "PYSPARK_PYTHON": sys.executable,
        }
        self.env.pop("SPARK_NO_DAEMONIZE", None)
        self.master_url = f"spark://127.0.0.1:{self.port}"

    def _daemon(self, action, cls, instance, *args):
        subprocess.run([str(SPARK_HOME / "sbin" / "spark-daemon.sh"), action, cls, str(instance), *args],
                       env=self.env, check=True, capture_output=True, timeout=60)

    def start(self):
        self._daemon("start", "org.apache.spark.deploy.master.Master", 1, "--host", "127.0.0.1",
                     "--port", str(self.port), "--webui-port", str(free_port()))
        for n in (1, 2):
            self._daemon("start", "org.apache.spark.deploy.worker.Worker", n, self.master_url, "--host", "127.0.0.1",
                         "--cores", "1", "--memory", "2g", "--webui-port", str(free_port()))
        return self

    def worker_pid(self, n: int) -> int:
        (pid_file,) = (self.workdir / "pids").glob(f"*Worker-{n}.pid")
        return int(pid_file.read_text())

    def stop(self):
        for pid_file in (self.workdir / "pids").glob("*.pid"):
            try:
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass


def test_standalone_cluster_survives_a_lost_worker(tmp_path, corpus, tiny_model_dir):
    cluster = StandaloneCluster(tmp_path).start()
    out = tmp_path / "out"
    try:
        slow = {"slow_partition_s": 1.0}
        job = start_job(write_config(tmp_path, corpus, tiny_model_dir, out, cluster.master_url, faults=slow), faults=slow)
        wait_for(lambda: len(committed_shards(out)) >= 1 or job.poll() is not None, 400, "a committed shard")
        assert job.poll() is None, job.stderr.read()[-3000:]
        os.kill(cluster.worker_pid(2), signal.SIGKILL)  # a worker (and with it its executor) is lost
        stdout, stderr = job.communicate(timeout=600)
        assert job.returncode == 0, stderr[-3000:]
    finally:
        cluster.stop()
    summary = json.loads((out / "_summary.json").read_text())
    assert summary["master"] == cluster.master_url and summary["rows_out"] == N_ROWS
    ids = pd.read_parquet(out)["id"].tolist()
    assert sorted(ids) == sorted(f"r{i}" for i in range(N_ROWS))
