"""The OpenVINO engine: an exported IR run by OpenVINO GenAI's continuous-batching pipeline.

The pipeline schedules requests itself: finished sequences leave and waiting prompts take
their slots at every step, prompts are prefilled in chunks beside running decodes, and the
KV cache is paged, so no compute goes to padding. With prefix caching (ModelSpec.prefix_caching)
a prompt's KV blocks are reused by every later prompt that starts the same way: requests are
added in prefix order, each after the prefill of the request it shares its prefix with, since
the cache is consulted when a request is added. Tokenisation, truncation, stop strings and
detokenisation stay with the engine, so both engines read and write text the same way: the
engine reads each sequence's tokens after every step and stops it at a stop string itself.
"""

from __future__ import annotations

import os

import pipelines.faults as faults
from pipelines.engine.backends import (
    BACKENDS,
    FINISH_EOS,
    FINISH_LENGTH,
    FINISH_STOP,
    Request,
    SequenceOutput,
)
from pipelines.engine.params import ModelSpec
from pipelines.engine.prefix_sharing import shared_prefixes

# dtype -> OpenVINO CPU inference precision. The weights' own format (fp32, fp16, int8, int4)
# is chosen at export; "auto" keeps the plugin's default for this CPU.
_PRECISIONS = {"float32": "f32", "int8": "f32", "bfloat16": "bf16", "float16": "f16"}
# Rows in the pipeline at once (admitted by the engine: with dynamic split-fuse the scheduler
# would run every added request, and past the KV cache it preempts and recomputes them).
MAX_RUNNING_SEQUENCES = 128
# No row is admitted while the KV cache is fuller than this: running rows still need blocks.
ADMIT_BELOW_CACHE_USAGE = 90.0  # percent, as the pipeline reports it
MAX_BATCHED_TOKENS = BACKENDS["openvino"].step_tokens  # per scheduler step: prompt chunks plus one per running row
# Prefixes shorter than this are not waited for: the cache reuses whole blocks (32 tokens on CPU).
MIN_SHARED_TOKENS = 32


def machine_cores() -> int:
    """Cores this process may run on (its affinity mask, as containers and taskset set it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cpu_properties(spec: ModelSpec) -> dict:
    """The CPU plugin's settings: threads, pinning and precision for this spec."""
    cores = machine_cores()
    threads = spec.num_threads or cores
    # OpenVINO pins a pipeline's threads to the first cores it sees: Spark tasks sharing a machine
    # would all pin to the same cores and halve each other's speed, so pin only a pipeline alone.
    properties = {"INFERENCE_NUM_THREADS": threads, "ENABLE_CPU_PINNING": threads >= cores}
    # The sampler's threads (its default is one per core of the machine, too many for a task that
    # shares it). The pipeline is never given stop strings: its sampler would detokenise for them
    # from several threads, and a race in OpenVINO GenAI's detokenizer queue can leave one waiting
    # forever, so that `step()` never returns; the engine checks stop strings itself.
    properties["sampler_num_threads"] = threads
    precision = _PRECISIONS.get(spec.dtype)
    if precision:
        properties.update(INFERENCE_PRECISION_HINT=precision, KV_CACHE_PRECISION=precision)
    return properties


class OpenVINODecoder:
    def __init__(self, pipeline, eos_id: int, prefix_caching: bool = True):
        self.pipeline = pipeline
        self.eos_id = eos_id
        self.prefix_caching = prefix_caching
        self._next_request_id = 0
        # The highest share of the KV cache in use during the last generate() (blocks shared by
        # prompts with a common prefix count once): how well prefixes were reused.
        self.peak_cache_usage = 0.0

    @classmethod
    def load(cls, spec: ModelSpec, eos_id: int) -> "OpenVINODecoder":
        try:
            import openvino_genai as og
        except ImportError as e:
            raise RuntimeError(
                "engine 'openvino' needs the openvino-genai package on every worker: "
                "pip install 'starcoder-pipelines[openvino]' (or openvino-genai)"
            ) from e
        scheduler = og.SchedulerConfig()
        scheduler.cache_size = spec.kv_cache_gb  # paged; when full, the scheduler runs fewer sequences
        scheduler.max_num_seqs = MAX_RUNNING_SEQUENCES
        scheduler.max_num_batched_tokens = MAX_BATCHED_TOKENS
        scheduler.dynamic_split_fuse = True
        scheduler.enable_prefix_caching = spec.prefix_caching
        pipeline = og.ContinuousBatchingPipeline(spec.source, scheduler, "CPU", cpu_properties(spec))
        return cls(pipeline, eos_id, spec.prefix_caching)

    def use_threads(self, n: int) -> None:
        pass  # fixed when the pipeline is compiled: the spec's num_threads, else the task's cores

    def generate(self, requests: list[Request], params, stop_check, max_rows: int = 0,
                 max_tokens: int = 0) -> list[list[SequenceOutput]]:
        """Every sample of every request. Rows are bounded by MAX_RUNNING_SEQUENCES and the KV cache,
        not by max_rows / max_tokens (batchSize, maxBatchTokens): the scheduler batches its rows itself."""
        import numpy as np
        import openvino as ov
        import openvino_genai as og

        # One row per sample, in prefix order. A request's first row waits for the prefill of the
        # request whose prefix it shares, its other samples for its first row: their blocks are reused.
        order, reuses = shared_prefixes([q.prompt for q in requests], MIN_SHARED_TOKENS)
        rows, waits_for, first_row = [], [], {}
        for r in order:
            request = requests[r]
            first_row[r] = len(rows)
            for s, seed in enumerate(request.seeds):
                rows.append((request, seed))
                if not self.prefix_caching:
                    waits_for.append(None)
                elif s:
                    waits_for.append(first_row[r] if len(request.prompt) >= MIN_SHARED_TOKENS else None)
                else:
                    waits_for.append(None if reuses[r] is None else first_row[reuses[r]])
        faults.check_batch(len(rows))
        handles = [None] * len(rows)
        tokens = [[] for _ in rows]  # each row's tokens, read from its handle after every step
        running, stopped = set(), set()

        def add(i: int) -> None:
            request, seed = rows[i]
            ids = ov.Tensor(np.asarray([request.prompt], dtype=np.int64))
            handles[i] = self.pipeline.add_request(self._next_request_id, ids, self._config(params, seed, request.stop_ids))
            self._next_request_id += 1
            running.add(i)

        def collect(i: int) -> bool:
            """Reads row i's new tokens; stops it at a stop string. True once the row is done."""
            handle = handles[i]
            while handle.can_read():
                for output in handle.read().values():
                    tokens[i].extend(output.generated_ids)
            if handle.get_status() != og.GenerationStatus.RUNNING:
                return True
            if stop_check is not None and tokens[i] and stop_check(tokens[i]):
                handle.stop()  # the scheduler drops it before the next forward pass
                stopped.add(i)
                return True
            return False

        def prefilled(i: int) -> bool:
            # Its first token exists, so its prompt's KV blocks are computed. Until the next step
            # the last, partly filled block still holds the prompt alone and is reused whole.
            return bool(tokens[i]) or (handles[i] is not None and i not in running)

        def admit() -> None:
            # In row order; a row whose prefix is not computed yet keeps its place (its turn comes
            # right after that prefill), and later rows may go ahead of it.
            if running and cache_usage >= ADMIT_BELOW_CACHE_USAGE:
                return
            places = MAX_RUNNING_SEQUENCES - len(running)
            for i in waiting:
                if places <= 0:
                    break
                if waits_for[i] is None or prefilled(waits_for[i]):
                    add(i)
                places -= 1

        waiting = list(range(len(rows)))
        cache_usage = self.peak_cache_usage = 0.0
        while waiting or running:
            admit()
            waiting = [i for i in waiting if handles[i] is None]
            self.pipeline.step()
            cache_usage = self.pipeline.get_metrics().cache_usage
            self.peak_cache_usage = max(self.peak_cache_usage, cache_usage)
            running -= {i for i in running if collect(i)}
        if self.pipeline.has_non_finished_requests():
            # Rows stopped in the last step: a step with nothing left to run frees them (marking
            # them out of memory, which does not matter any more).
            self.pipeline.step()

        outputs = {}
        for i, ((request, seed), handle, row_tokens) in enumerate(zip(rows, handles, tokens)):
            if i not in stopped and handle.get_status() != og.GenerationStatus.FINISHED:
                raise RuntimeError(
                    f"the OpenVINO pipeline did not finish a prompt of {len(request.prompt)} tokens "
                    f"({handle.get_status().name}): it may not fit the KV cache; raise kvCacheSizeGB "
                    "(model.kv_cache_gb) or lower maxInputLength"
                )
            outputs.setdefault(id(request), []).append(self._finish(row_tokens, params, request.stop_ids, stop_check))
        return [outputs[id(request)] for request in requests]

    def _config(self, params, seed, row_stops):
        import openvino_genai as og

        config = og.GenerationConfig()
        config.max_new_tokens = params.max_output_length
        config.min_new_tokens = params.min_output_length
        config.set_eos_token_id(self.eos_id)
        config.stop_token_ids = {self.eos_id, *params.stop_token_ids, *row_stops}
        config.repetition_penalty = params.repetition_penalty
        config.no_repeat_ngram_size = params.no_repeat_ngram_size or config.no_repeat_ngram_size
        if params.do_sample:
            config.do_sample = True
            config.temperature = params.temperature
            config.top_p = params.top_p
            if params.top_k > 0:  # 0 disables top-k: the default here already does
                config.top_k = params.top_k
            config.rng_seed = seed  # per sequence: the draw does not depend on its batch
        return config

    def _finish(self, tokens, params, row_stops, stop_check) -> SequenceOutput:
        last = tokens[-1] if tokens else None
        if last == self.eos_id:
            return SequenceOutput(tokens, FINISH_EOS, True)
        if last in params.stop_token_ids or last in row_stops:
            return SequenceOutput(tokens, FINISH_STOP, True)
        if stop_check is not None and tokens and stop_check(tokens):
            return SequenceOutput(tokens, FINISH_STOP)
        return SequenceOutput(tokens, FINISH_LENGTH)
