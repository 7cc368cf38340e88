"""Test-only fault injection, switched on by one environment variable and off by default.

STARCODER_PIPELINES_FAULTS holds JSON, or `@/path/to/file.json` to read it from a file (so a test
can switch faults on and off while Spark's Python workers keep running). For example:
  {"fail_prompt_containing": "BOOM"}        generation raises for prompts containing BOOM
  {"kill_worker_once": "/tmp/marker"}       the first worker to start a partition exits (once)
  {"sigkill_worker": true}                  every worker is killed at partition start, as the
                                            kernel's out-of-memory killer does
  {"oom_above_batch": 2}                    a forward pass over more than 2 rows runs out of memory
  {"slow_partition_s": 1.5}                 each partition sleeps first (to interrupt a run)
  {"record_prompts_to": "/tmp/prompts"}     every prompt reaching an engine is appended there (JSON lines)
The reliability tests use these to prove that retries, resume and per-row errors behave.
"""

from __future__ import annotations

import json
import os
import time

ENV = "STARCODER_PIPELINES_FAULTS"


def _faults() -> dict:
    raw = os.environ.get(ENV)
    if raw and raw.startswith("@"):
        try:
            with open(raw[1:]) as f:
                raw = f.read()
        except FileNotFoundError:
            return {}
    return json.loads(raw) if raw else {}


def check_prompt(prompt: str) -> None:
    marker = _faults().get("fail_prompt_containing")
    if marker and marker in prompt:
        raise RuntimeError(f"injected failure for a prompt containing {marker!r}")


def record_prompts(prompts: list[str]) -> None:
    path = _faults().get("record_prompts_to")
    if path:
        with open(path, "a") as f:
            f.writelines(json.dumps(p) + "\n" for p in prompts)


def check_batch(rows: int) -> None:
    limit = _faults().get("oom_above_batch")
    if limit is not None and rows > limit:
        import torch

        raise torch.OutOfMemoryError(f"injected out-of-memory for a batch of {rows} rows")


def at_partition_start() -> None:
    faults = _faults()
    if faults.get("sigkill_worker"):
        os.kill(os.getpid(), 9)  # SIGKILL: no Python code runs after it
    if faults.get("slow_partition_s"):
        time.sleep(float(faults["slow_partition_s"]))
    marker = faults.get("kill_worker_once")
    if marker and not os.path.exists(marker):
        with open(marker, "w") as f:
            f.write(str(os.getpid()))
        os._exit(17)  # the Python worker dies mid-task, as on a crash
