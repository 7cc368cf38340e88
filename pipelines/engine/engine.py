"""Text in, completions out: tokenise, truncate, batch by length, generate, detokenise.

`GenerationEngine` is what a Spark worker (or a plain Python program) holds on to: the model
and tokenizer are loaded once, and `complete()` is called for every chunk of prompts.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pipelines.faults as faults
from pipelines.engine.backends import Backend, Request, choose_backend
from pipelines.engine.params import GenerationParams, InvalidParamError, ModelSpec
from pipelines.engine.tokenizer import CodeTokenizer, keep_end
from pipelines.models.source import model_forms

FINISH_EMPTY = "empty_input"
FINISH_ERROR = "error"


@dataclass
class Completion:
    """One generated sequence for one prompt."""

    text: str  # prompt + completion when return_full_text, else the completion alone
    completion: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # eos | stop | length | empty_input
    truncated: bool  # the prompt was cut from the left to max_input_length tokens
    seed: int | None  # the draw's seed when sampling
    error: str | None = None  # why this prompt could not be completed
    # outputLogProbs: sum of the model's log-probabilities over the completion_tokens generated tokens
    logprob: float | None = None

    @property
    def mean_logprob(self) -> float | None:
        if self.logprob is None or not self.completion_tokens:
            return None
        return self.logprob / self.completion_tokens


def failed(error: BaseException) -> Completion:
    """The answer for a prompt whose generation raised: no text, the error kept."""
    return Completion("", "", 0, 0, FINISH_ERROR, False, None, f"{type(error).__name__}: {error}")


def sequence_seed(base_seed: int, prompt: str, sample_index: int) -> int:
    """A per-sequence seed that depends only on the run's seed, the prompt and the sample number."""
    digest = hashlib.blake2b(f"{base_seed}\x00{sample_index}\x00{prompt}".encode("utf-8", "surrogatepass"), digest_size=8)
    return int.from_bytes(digest.digest(), "little") & ((1 << 63) - 1)


class StopStrings:
    """Detects stop strings in a growing completion by decoding only its tail."""

    def __init__(self, tokenizer: CodeTokenizer, stop_strings: tuple[str, ...]):
        self._tokenizer = tokenizer
        self._stops = stop_strings
        # A token decodes to at least one character, so this many tokens cover any stop string.
        self._tail = max(len(s) for s in stop_strings) + 2

    def __call__(self, token_ids: list[int]) -> bool:
        tail = self._tokenizer.decode(token_ids[-self._tail:])
        return any(s in tail for s in self._stops)

    def cut(self, text: str) -> str:
        """The text up to the first stop string (the stop string itself is not returned)."""
        hits = [i for i in (text.find(s) for s in self._stops) if i >= 0]
        return text[: min(hits)] if hits else text


class GenerationEngine:
    """`decoder` turns token ids into generated token ids: the decoder of a `backend` (a row of
    engine.backends.BACKENDS)."""

    def __init__(self, decoder, tokenizer: CodeTokenizer, backend: Backend, forms: tuple[str, ...] = ()):
        self.decoder = decoder
        self.backend = backend
        self.forms = forms  # the model forms its source holds (for the engine a refusal names instead)
        self.tokenizer = tokenizer
        fim = tokenizer.fim  # None: the vocabulary has no FIM tokens, and no prompt is a FIM prompt
        self.fim_middle_id = tokenizer.token_id(fim.middle_token) if fim else None
        # A FIM middle ends at end-of-text (always a stop) or at any of these: the model has
        # moved on to another file or another FIM segment.
        self.fim_stop_ids = frozenset(
            tokenizer.token_id(t) for t in (fim.stop_tokens if fim else ()) if tokenizer.has_token(t)
        )
        # A model with several end-of-sequence ids ends every row at the others too.
        self.extra_end_ids = tokenizer.extra_eos_ids

    @classmethod
    def load(cls, spec: ModelSpec) -> "GenerationEngine":
        tokenizer = CodeTokenizer.for_model(spec.source)
        backend = choose_backend(spec.source, spec.engine, spec.device, dtype=spec.dtype)
        return cls(backend.decoder_class().load(spec, tokenizer.eos_token_id), tokenizer, backend,
                   model_forms(spec.source))

    @property
    def model(self):
        return self.decoder.model  # the torch engine's transformers model

    @property
    def device(self):
        return self.decoder.device

    def use_threads(self, n: int) -> None:
        """Match intra-op threads to the cores this worker was given."""
        self.decoder.use_threads(n)

    def complete(
        self, prompts: list[str], params: GenerationParams, batch_size: int = 8, max_batch_tokens: int = 0
    ) -> list[list[Completion]]:
        """For each prompt, `params.n_return_sequences` completions, in the prompts' order.

        At most `batch_size` rows decode together (PyTorch: a finished row's place goes to the next
        waiting prompt or sample); `max_batch_tokens` (0: no bound) caps running rows x (longest
        prompt + max_output_length), which bounds the KV cache and activations of every forward pass;
        the rows also stay within the KV cache memory the model spec gives (kv_cache_gb).
        """
        if params.n_return_sequences > 1 and not params.do_sample:
            raise InvalidParamError("nReturnSequences > 1 needs doSample=True: greedy decoding gives one answer")
        if params.do_sample and params.random_seed is None:
            raise InvalidParamError("randomSeed must be set when doSample=True, so that reruns and retries agree")
        self.backend.check_params(params, self.forms)  # (the annotators check it on the driver too, before any load)
        faults.record_prompts(prompts)
        encoded = self.tokenizer.encode_batch(prompts)
        limit = params.max_input_length
        truncated = [len(ids) > limit for ids in encoded]
        encoded = [keep_end(ids, limit) for ids in encoded]

        # Greedy output depends on the tokens alone: an exact duplicate is generated once.
        first_of = {}
        same_as = [first_of.setdefault(tuple(ids), p) if not params.do_sample else p for p, ids in enumerate(encoded)]
        stop = StopStrings(self.tokenizer, params.stop_strings) if params.stop_strings else None
        is_fim = [self.fim_middle_id is not None and bool(ids) and ids[-1] == self.fim_middle_id for ids in encoded]
        n = params.n_return_sequences
        seeds = {p: [sequence_seed(params.random_seed, prompts[p], s) if params.do_sample else None for s in range(n)]
                 for p in range(len(prompts))}
        # One request per distinct prompt, its n samples sharing one prefill; sorted by length so that
        # rows running together carry little padding.
        order = sorted((p for p in range(len(prompts)) if encoded[p] and same_as[p] == p), key=lambda p: len(encoded[p]))
        for p in order:
            faults.check_prompt(prompts[p])
        requests = [Request(encoded[p], seeds[p], self.extra_end_ids | self.fim_stop_ids if is_fim[p]
                            else self.extra_end_ids) for p in order]
        outputs = {}
        if requests:
            results = self.decoder.generate(requests, params, stop, batch_size, max_batch_tokens)
            outputs = {(p, s): out for p, samples in zip(order, results) for s, out in enumerate(samples)}

        completions = []
        for p, prompt in enumerate(prompts):
            row = []
            for s in range(params.n_return_sequences):
                if not encoded[p]:
                    row.append(Completion(prompt, "", 0, 0, FINISH_EMPTY, False, None))
                    continue
                out = outputs[(same_as[p], s)]
                text = self._completion_text(encoded[p], out.token_ids, out.ends_with_stop_token, stop)
                full_text = params.return_full_text and not is_fim[p]  # a FIM answer is the middle alone
                row.append(
                    Completion(
                        text=prompt + text if full_text else text,
                        completion=text,
                        prompt_tokens=len(encoded[p]),
                        completion_tokens=len(out.token_ids),
                        finish_reason=out.finish_reason,
                        truncated=truncated[p],
                        seed=seeds[same_as[p]][s],
                        logprob=out.logprob,
                    )
                )
            completions.append(row)
        return completions

    def _completion_text(self, prompt_ids, generated, ends_with_stop_token, stop) -> str:
        if ends_with_stop_token:
            generated = generated[:-1]
        # Decode with the prompt so characters split across the boundary decode correctly.
        prompt_text = self.tokenizer.decode(prompt_ids)
        text = self.tokenizer.decode(prompt_ids + generated)[len(prompt_text):]
        return stop.cut(text) if stop else text
