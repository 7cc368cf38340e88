"""One generation engine per Python worker process, built on first use and reused by every task.

This lives in a module (not a closure) on purpose: a closure would pickle its own copy of
the cache with every task, and the model would be loaded again each time.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from pipelines.engine.params import ModelSpec

# When set, every model load appends "<pid> <source>" to this file (used to count loads).
LOAD_LOG_ENV = "STARCODER_PIPELINES_LOAD_LOG"

_engines: dict[tuple, object] = {}
_lock = threading.Lock()
log = logging.getLogger("pipelines.worker")


def get_engine(spec: ModelSpec):
    key = spec.cache_key()
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            from pipelines.engine.engine import GenerationEngine

            started = time.perf_counter()
            engine = GenerationEngine.load(spec)
            _engines.clear()  # one model per worker: a new model replaces the old one
            _engines[key] = engine
            log.info("loaded %s in %.1fs (pid %d)", spec.source, time.perf_counter() - started, os.getpid())
            _record_load(spec)
        return engine


def _record_load(spec: ModelSpec) -> None:
    path = os.environ.get(LOAD_LOG_ENV)
    if path:
        with open(path, "a") as f:
            f.write(f"{os.getpid()} {spec.source}\n")
