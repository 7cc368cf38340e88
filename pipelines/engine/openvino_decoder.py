"""The OpenVINO engine: an exported IR run by OpenVINO GenAI's continuous-batching pipeline.

The pipeline schedules requests itself: finished sequences leave and waiting prompts take
their slots at every step, prompts are prefilled in chunks beside running decodes, and the
KV cache is paged, so no compute goes to padding. Tokenisation, truncation, stop strings and
detokenisation stay with the engine, so both engines read and write text the same way.
"""

from __future__ import annotations

import os

from pipelines import faults
from pipelines.engine.generate import FINISH_EOS, FINISH_LENGTH, FINISH_STOP, SequenceOutput
from pipelines.engine.params import InvalidParamError, ModelSpec

# dtype -> OpenVINO CPU inference precision. The weights' own format (fp32, fp16, int8, int4)
# is chosen at export; "auto" keeps the plugin's default for this CPU.
_PRECISIONS = {"float32": "f32", "int8": "f32", "bfloat16": "bf16", "float16": "f16"}
MAX_RUNNING_SEQUENCES = 64
MAX_BATCHED_TOKENS = 2048  # tokens per scheduler step: prompt chunks plus one per running sequence


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
    precision = _PRECISIONS.get(spec.dtype)
    if precision:
        properties.update(INFERENCE_PRECISION_HINT=precision, KV_CACHE_PRECISION=precision)
    return properties


class OpenVINODecoder:
    schedules_itself = True  # give it every request at once

    def __init__(self, pipeline, eos_id: int):
        self.pipeline = pipeline
        self.eos_id = eos_id

    @classmethod
    def load(cls, spec: ModelSpec, eos_id: int) -> "OpenVINODecoder":
        try:
            import openvino_genai as og
        except ImportError as e:
            raise RuntimeError(
                "engine 'openvino' needs the openvino-genai package on every worker: "
                "pip install 'starcoder-pipelines[openvino]' (or openvino-genai)"
            ) from e
        if spec.device == "cuda":
            raise InvalidParamError("engine 'openvino' runs on the CPU here; use engine 'pytorch' for device 'cuda'")
        scheduler = og.SchedulerConfig()
        scheduler.cache_size = spec.kv_cache_gb  # paged; when full, the scheduler runs fewer sequences
        scheduler.max_num_seqs = MAX_RUNNING_SEQUENCES
        scheduler.max_num_batched_tokens = MAX_BATCHED_TOKENS
        scheduler.dynamic_split_fuse = True
        return cls(og.ContinuousBatchingPipeline(spec.source, scheduler, "CPU", cpu_properties(spec)), eos_id)

    def use_threads(self, n: int) -> None:
        pass  # fixed when the pipeline is compiled: the spec's num_threads, else the task's cores

    def generate(self, prompts, params, seeds, stop_check, row_stop_ids) -> list[SequenceOutput]:
        import numpy as np
        import openvino as ov

        if params.ignore_token_ids:
            raise InvalidParamError(
                "ignoreTokenIds is not supported by engine 'openvino'; use engine 'pytorch' for it"
            )
        if params.output_logprobs:
            raise InvalidParamError(
                "outputLogProbs is not supported by engine 'openvino': its pipeline does not return the model's "
                "own log-probabilities (before sampling settings); use engine 'pytorch' for it"
            )
        faults.check_batch(len(prompts))
        inputs = [ov.Tensor(np.asarray([ids], dtype=np.int64)) for ids in prompts]
        configs = [self._config(params, seed, row_stops) for seed, row_stops in zip(seeds, row_stop_ids)]
        results = self.pipeline.generate(inputs, configs, None)
        outputs = []
        for result, row_stops in zip(results, row_stop_ids):
            tokens = list(result.m_generation_ids[0])
            outputs.append(self._finish(tokens, params, row_stops, stop_check))
        return outputs

    def _config(self, params, seed, row_stops):
        import openvino_genai as og

        config = og.GenerationConfig()
        config.max_new_tokens = params.max_output_length
        config.min_new_tokens = params.min_output_length
        config.set_eos_token_id(self.eos_id)
        config.stop_token_ids = {self.eos_id, *params.stop_token_ids, *row_stops}
        if params.stop_strings:
            config.stop_strings = set(params.stop_strings)
            config.include_stop_str_in_output = True  # the engine cuts the text itself
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
