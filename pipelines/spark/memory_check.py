"""The memory plan of a Spark session: how many model workers run at once on one machine, how
much memory they have there, and whether the model fits, checked on the driver before any task.

local[N]: N / spark.task.cpus workers against this machine's available memory. A cluster:
spark.executor.cores / spark.task.cpus workers against spark.executor.pyspark.memory, else
spark.executor.memoryOverhead (the memory outside the JVM heap, where Python workers live);
when neither is set the plan is logged but cannot be checked. `worker_memory_gb` overrides the
figure wherever it comes from.
"""

from __future__ import annotations

import logging
import os
import re

from pipelines.engine.memory_plan import (
    GiB,
    MemoryPlan,
    MemoryPlanError,
    gib,
    settings_that_fit,
    worker_memory,
)
from pipelines.engine.params import ModelSpec

log = logging.getLogger("pipelines.memory")

_logged: set = set()
_UNITS = {"k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40, "p": 2**50}


def parse_size(value: str, default_unit: str = "m") -> int:
    """Spark's memory strings ("4g", "512m", "2048": MiB) in bytes."""
    match = re.fullmatch(r"\s*(\d+)\s*([kmgtp]?)b?\s*", str(value).lower())
    if not match:
        raise ValueError(f"{value!r} is not a memory size (expected e.g. 4g or 512m)")
    return int(match.group(1)) * _UNITS[match.group(2) or default_unit]


def machine_available_memory() -> int | None:
    """MemAvailable of this machine (what can be allocated without swapping), or None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def session_workers_memory() -> int:
    """Anonymous memory held by this driver's own Spark Python workers (local mode). They are
    reused by the next tasks, with the model they hold, so that memory is theirs to use again."""
    children: dict[int, list[int]] = {}
    for proc in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not proc.isdigit():
            continue
        try:
            with open(f"/proc/{proc}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(proc))
    held, todo = 0, list(children.get(os.getpid(), []))
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"pyspark" not in f.read():
                    continue
            with open(f"/proc/{pid}/status") as f:
                held += next((int(line.split()[1]) * 1024 for line in f if line.startswith("RssAnon:")), 0)
        except OSError:
            continue
    return held


def local_cores(master: str) -> int | None:
    """Cores of a local master: local, local[4], local[*], local[4,3] (retries)."""
    if master == "local":
        return 1
    match = re.fullmatch(r"local\[(\*|\d+)(,\s*\d+)?\]", master)
    if not match:
        return None
    if match.group(1) == "*":
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return int(match.group(1))


def _conf(spark, key: str) -> str | None:
    value = spark.conf.get(key, None)
    return None if value in (None, "") else value


def session_plan(spark, spec: ModelSpec, max_batch_tokens: int = 0, worker_memory_gb: float = 0,
                 max_rows_tokens: int = 0, kv_cache: bool = True):
    """(plan or None when the worker count is unknown, cores per executor, a note)."""
    master = _conf(spark, "spark.master") or ""
    task_cpus = int(_conf(spark, "spark.task.cpus") or 1)
    memory = worker_memory(spec.source, spec.dtype, spec.device, spec.engine, spec.kv_cache_gb,
                           max_batch_tokens, max_rows_tokens, kv_cache)
    cores = local_cores(master)
    if cores is not None:
        workers_from = f"{master} with spark.task.cpus={task_cpus}"
        available, available_from = machine_available_memory(), "this machine's available memory"
        held = session_workers_memory()
        if available is not None and held:
            available += held
            available_from += f", with {gib(held)} this session's Python workers hold"
    else:
        cores = int(_conf(spark, "spark.executor.cores") or 0) or None
        workers_from = f"spark.executor.cores={cores} / spark.task.cpus={task_cpus}"
        available, available_from = None, "set spark.executor.pyspark.memory or model.worker_memory_gb to check"
        for key in ("spark.executor.pyspark.memory", "spark.executor.memoryOverhead"):
            if _conf(spark, key):
                available, available_from = parse_size(_conf(spark, key)), key
                break
    if worker_memory_gb:
        available, available_from = int(worker_memory_gb * GiB), "workerMemoryGB / model.worker_memory_gb"
    if cores is None:
        return None, 0, "spark.executor.cores is not set, so the workers per executor are unknown"
    workers = max(1, cores // task_cpus)
    return MemoryPlan(memory, workers, available, available_from, workers_from), cores, ""


def check_memory(spark, spec: ModelSpec, max_batch_tokens: int = 0, worker_memory_gb: float = 0,
                 mode: str = "error", max_rows_tokens: int = 0, kv_cache: bool = True) -> MemoryPlan | None:
    """Log the plan; when it does not fit, raise MemoryPlanError (mode error) or warn.

    `kv_cache=False` plans work that keeps no KV cache (scoring)."""
    if spec.device == "cuda":
        return None  # GPU memory is planned by the batch planner's OOM halving, not here
    plan, cores, note = session_plan(spark, spec, max_batch_tokens, worker_memory_gb, max_rows_tokens, kv_cache)
    if plan is None:
        _log_once(spec, f"memory plan for {spec.source}: cannot be checked: {note}")
        return None
    _log_once((spec, plan.workers, plan.fits), f"memory plan for {spec.source} ({spec.dtype}): {plan.describe()}")
    if plan.fits:
        return plan

    def memory_for(dtype, kv_cache_gb):
        return worker_memory(spec.source, dtype, spec.device, spec.engine, kv_cache_gb, max_batch_tokens,
                             max_rows_tokens, kv_cache)

    fixes = settings_that_fit(plan, cores, spec.dtype, spec.kv_cache_gb, memory_for)
    message = (
        f"the model does not fit in memory: {plan.describe()}. "
        + (f"Settings that fit: {'; or '.join(fixes)}. " if fixes else
           "Even one worker with int8 weights does not fit: use a machine with more memory. ")
        + "To run anyway, set memoryCheck='warn' (model.memory_check: warn)"
    )
    if mode == "warn":
        log.warning(message)
        return plan
    raise MemoryPlanError(message)


def _log_once(key, message: str) -> None:
    """Once per model, settings and outcome: a job checks at start-up and again per shard, and
    the available memory it reads moves a little each time."""
    if key not in _logged:
        _logged.add(key)
        log.info(message)
