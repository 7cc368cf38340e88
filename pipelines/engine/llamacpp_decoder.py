"""The llama.cpp engine: a GGUF file run by llama.cpp (llama-cpp-python's bindings) with the
weights as the file stores them (Q4_0, Q8_0, K-quants...), as Ollama and llama-server run them.

One llama.cpp context holds every running row (up to 16) as a sequence of one unified KV cache. Each
`llama_decode` carries the next token of every running row and, in the room left, chunks of the
prompts being prefilled, the way llama-server batches its slots; a row that finishes frees its
cells and the next waiting prompt takes its place. The samples of one prompt share its prefill
(its cells are copied to their sequences, not recomputed). Tokenisation, stop strings and
detokenisation stay with the engine, so every engine reads and writes text the same way.

Each row's next token comes from its logits as on the PyTorch engine (`row_sampling`: transformers'
order of penalties, bans, temperature, top-k, top-p; a generator seeded per sample), so the
settings mean the same on both and a draw does not depend on the batch.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import pipelines.faults as faults
from pipelines.engine.backends import FINISH_EOS, FINISH_LENGTH, FINISH_STOP, Request, SequenceOutput
from pipelines.engine.memory_plan import kv_bytes_per_token
from pipelines.engine.params import ModelSpec
from pipelines.engine.row_sampling import RowSampler
from pipelines.models.source import model_config

# Rows decoding at once; the KV cache bounds them too. In one unified cache every decoded token is
# computed against the cells of every row (masked), a cost that grows with the square of the rows:
# on SmolLM2-135M Q4_0, 64 HumanEval prompts x 128 new, 16 rows made 236 tokens/s, 32 rows 173 and
# 64 rows 102 (2-core AVX512 EPYC). Split caches (a stream per row) gave wrong tokens for some rows
# when prompts of several rows were prefilled in one call (llama-cpp-python 0.3.36).
MAX_RUNNING_SEQUENCES = 16
# Tokens per llama_decode call (prompt chunks plus one per running row), and per forward pass.
BATCH_TOKENS = 2048
MICRO_BATCH_TOKENS = 512
KV_ELEMENT_BYTES = 2  # llama.cpp's default KV cache type is f16
GGML_LOG_LEVEL_ERROR = 4  # ggml.h's enum ggml_log_level


def _llama():
    try:
        import llama_cpp
    except ImportError as e:
        raise RuntimeError(
            "engine 'llamacpp' needs the llama-cpp-python package on every worker: "
            "pip install 'starcoder-pipelines[llamacpp]' (it compiles llama.cpp: cmake and a C++ compiler)"
        ) from e
    return llama_cpp


_QUIET_LOG = None  # keeps the callback alive while llama.cpp holds it


def _quiet(llama_cpp) -> None:
    """llama.cpp logs every load and context to stderr; keep its errors only."""
    global _QUIET_LOG
    if _QUIET_LOG is None:
        def log(level, text, user_data):
            if level == GGML_LOG_LEVEL_ERROR:
                print(text.decode(errors="replace"), end="", flush=True)

        _QUIET_LOG = llama_cpp.llama_log_callback(log)
        llama_cpp.llama_log_set(_QUIET_LOG, ctypes.c_void_p())


def kv_cache_tokens(source: str, kv_cache_gb: int) -> int:
    """Tokens a KV cache of `kv_cache_gb` GiB holds for this model (all running rows together)."""
    return kv_cache_gb * 2**30 // kv_bytes_per_token(model_config(source), KV_ELEMENT_BYTES)


@dataclass
class _Row:
    """One sample of one request: its sequence in the KV cache and what it has generated."""

    request: Request
    seed: int | None
    seq: int = -1
    tokens: list[int] = field(default_factory=list)
    sampler: RowSampler | None = None
    logprob: float = 0.0
    output: SequenceOutput | None = None


class LlamaCppDecoder:
    def __init__(self, llama_cpp, model, context, eos_id: int, kv_tokens: int, threads: int):
        self.ll = llama_cpp
        self.model = model
        self.context = context
        self.eos_id = eos_id
        self.kv_tokens = kv_tokens
        self.threads = threads
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(model))
        self.memory = llama_cpp.llama_get_memory(context)
        self.batch = llama_cpp.llama_batch_init(BATCH_TOKENS, 0, 1)
        self.device = "cpu"

    @classmethod
    def load(cls, spec: ModelSpec, eos_id: int) -> "LlamaCppDecoder":
        from pipelines.engine.openvino_decoder import machine_cores

        ll = _llama()
        _quiet(ll)
        ll.llama_backend_init()
        model = ll.llama_model_load_from_file(str(Path(spec.source)).encode(), ll.llama_model_default_params())
        if not model:
            raise RuntimeError(f"llama.cpp could not load {spec.source}: its architecture or quantisation may be "
                               "newer than this llama-cpp-python; use engine 'pytorch' for it")
        threads = spec.num_threads or machine_cores()
        kv_tokens = kv_cache_tokens(spec.source, spec.kv_cache_gb)
        params = ll.llama_context_default_params()
        params.n_ctx = kv_tokens
        params.n_batch = BATCH_TOKENS
        params.n_ubatch = MICRO_BATCH_TOKENS
        params.n_seq_max = MAX_RUNNING_SEQUENCES
        params.n_threads = params.n_threads_batch = threads
        params.kv_unified = True  # one pool of cells for every row: a row takes what it uses
        params.no_perf = True
        context = ll.llama_init_from_model(model, params)
        if not context:
            ll.llama_model_free(model)
            raise RuntimeError(f"llama.cpp could not make a context of {kv_tokens} tokens for {spec.source}: "
                               "lower kvCacheSizeGB (model.kv_cache_gb)")
        return cls(ll, model, context, eos_id, kv_tokens, threads)

    def __del__(self):
        ll = getattr(self, "ll", None)
        if ll is not None and self.context:
            ll.llama_batch_free(self.batch)
            ll.llama_free(self.context)
            ll.llama_model_free(self.model)
            self.context = None

    def use_threads(self, n: int) -> None:
        if n > 0 and n != self.threads:
            self.ll.llama_set_n_threads(self.context, n, n)
            self.threads = n

    # -- one generate() call ------------------------------------------------------------------

    def generate(self, requests: list[Request], params, stop_check, max_rows: int = 0,
                 max_tokens: int = 0) -> list[list[SequenceOutput]]:
        """Every sample of every request. Rows are bounded by MAX_RUNNING_SEQUENCES and the KV cache,
        not by max_rows / max_tokens (batchSize, maxBatchTokens): llama.cpp batches its rows itself."""
        ll = self.ll
        rows = {id(q): [_Row(q, seed) for seed in q.seeds] for q in requests}
        faults.check_batch(sum(len(r) for r in rows.values()))
        for q in requests:
            need = len(q.prompt) + len(q.seeds) * params.max_output_length
            if need > self.kv_tokens:
                raise RuntimeError(
                    f"a prompt of {len(q.prompt)} tokens with {len(q.seeds)} x {params.max_output_length} new "
                    f"tokens does not fit llama.cpp's KV cache of {self.kv_tokens} tokens: raise kvCacheSizeGB "
                    "(model.kv_cache_gb) or lower maxInputLength"
                )
        end_ids = np.array(sorted({self.eos_id, *params.stop_token_ids}), dtype=np.int64)
        ignored = np.array(sorted(params.ignore_token_ids), dtype=np.int64)
        free_seqs = list(range(MAX_RUNNING_SEQUENCES - 1, -1, -1))
        waiting = list(requests)
        prefilling: list[tuple[Request, int]] = []  # (request, prompt tokens already decoded)
        decoding: list[_Row] = []
        reserved = 0  # KV cells promised to admitted requests (prompt + every sample's new tokens)

        def cost(q: Request) -> int:
            return len(q.prompt) + len(q.seeds) * params.max_output_length

        while waiting or prefilling or decoding:
            while waiting and len(waiting[0].seeds) <= len(free_seqs) and reserved + cost(waiting[0]) <= self.kv_tokens:
                q = waiting.pop(0)
                reserved += cost(q)
                for row in rows[id(q)]:
                    row.seq = free_seqs.pop()
                    row.sampler = RowSampler(params, q.prompt, self.n_vocab, row.seed)
                prefilling.append((q, 0))
            # The batch: each decoding row's last token, then prompt chunks in the room left.
            entries = []  # (token, position, sequence, wants logits)
            for row in decoding:
                entries.append((row.tokens[-1], len(row.request.prompt) + len(row.tokens) - 1, row.seq, True))
            finishing = []  # (request, index in the batch of its last prompt token)
            still = []
            for q, done in prefilling:
                room = BATCH_TOKENS - len(entries)
                take = min(room, len(q.prompt) - done)
                seq = rows[id(q)][0].seq
                for k in range(done, done + take):
                    entries.append((q.prompt[k], k, seq, k == len(q.prompt) - 1))
                if done + take == len(q.prompt):
                    finishing.append((q, len(entries) - 1))
                else:
                    still.append((q, done + take))
            prefilling = still
            self._decode(entries)
            for q, index in finishing:  # the other samples share the prompt's cells
                first = rows[id(q)][0].seq
                for row in rows[id(q)][1:]:
                    ll.llama_memory_seq_cp(self.memory, first, row.seq, -1, -1)
            chosen = [(row, k) for k, row in enumerate(decoding)]
            chosen += [(row, index) for q, index in finishing for row in rows[id(q)]]
            still_decoding = []
            for row, index in chosen:
                self._next_token(row, index, params, end_ids, ignored)
                if self._finished(row, params, stop_check):
                    ll.llama_memory_seq_rm(self.memory, row.seq, -1, -1)
                    free_seqs.append(row.seq)
                    if all(r.output for r in rows[id(row.request)]):
                        reserved -= cost(row.request)
                else:
                    still_decoding.append(row)
            decoding = still_decoding
        return [[row.output for row in rows[id(q)]] for q in requests]

    def _decode(self, entries) -> None:
        batch = self.batch
        for i, (token, position, seq, logits) in enumerate(entries):
            batch.token[i] = token
            batch.pos[i] = position
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq
            batch.logits[i] = logits
        batch.n_tokens = len(entries)
        status = self.ll.llama_decode(self.context, batch)
        if status != 0:
            raise RuntimeError(f"llama.cpp's decode failed (status {status}) on a batch of {len(entries)} tokens: "
                               "the KV cache may be full; raise kvCacheSizeGB (model.kv_cache_gb)")

    def _next_token(self, row: _Row, index: int, params, end_ids, ignored) -> None:
        pointer = self.ll.llama_get_logits_ith(self.context, index)
        logits = np.ctypeslib.as_array(pointer, shape=(self.n_vocab,))
        if params.output_logprobs:  # the model's own distribution, before any ban or sampling setting
            top = logits.max()
            model_logprobs = logits - top - np.log(np.exp(logits - top).sum())
        token = row.sampler.next_token(logits, end_ids, ignored)
        if params.output_logprobs:
            row.logprob += float(model_logprobs[token])
        row.tokens.append(token)
        row.sampler.accept(token)

    def _finished(self, row: _Row, params, stop_check) -> bool:
        token, tokens = row.tokens[-1], row.tokens
        logprob = row.logprob if params.output_logprobs else None
        if token == self.eos_id:
            row.output = SequenceOutput(list(tokens), FINISH_EOS, True, logprob)
        elif token in params.stop_token_ids or token in row.request.stop_ids:
            row.output = SequenceOutput(list(tokens), FINISH_STOP, True, logprob)
        elif stop_check is not None and stop_check(tokens):
            row.output = SequenceOutput(list(tokens), FINISH_STOP, False, logprob)
        elif len(tokens) >= params.max_output_length:
            row.output = SequenceOutput(list(tokens), FINISH_LENGTH, False, logprob)
        return row.output is not None
