"""Score documents: the log-probability the model gives each token, summed into a perplexity.

Scoring is prefill only: no token is generated and no KV cache is kept. Every document is cut
into windows of at most `max_input_length` tokens (strided, as in the transformers perplexity
guide, when it is longer); all windows of a call are sorted by length and run in token-bounded
batches through the transformer body, and the LM head then runs only over the positions that
predict a scored token, in chunks that bound the logits' memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

import pipelines.faults as faults
from pipelines.engine.params import ScoringParams

# Logits of one LM-head chunk (rows x vocabulary, float32): 49,152 columns -> ~680 rows.
LM_HEAD_CHUNK_BYTES = 128 * 2**20
# Tokens per forward pass on the CPU when maxBatchTokens is 0. Past about a thousand rows the
# activations of a pass leave the cache and its GEMMs get slower per FLOP: on the 111M benchmark
# model, 1,024 scored 31% faster than the 25k-token activation budget and 6-20% faster than
# 2,048-4,096 (bench/score.py). A GPU keeps the activation budget.
CPU_FORWARD_TOKENS = 1024


@dataclass(frozen=True)
class Window:
    """Tokens [begin, end) of a document go through the model; tokens [first_scored, end) are scored."""

    begin: int
    end: int
    first_scored: int


@dataclass
class DocumentScore:
    tokens: int  # tokens in the document
    logprob: float  # sum of log p(token | the tokens before it) over every token but the first
    windows: int  # forward windows the document took (0 for fewer than two tokens)
    error: str | None = None  # why this document could not be scored

    @property
    def scored_tokens(self) -> int:
        """Tokens with a log-probability: all but the first, which has no context to be predicted from."""
        return max(self.tokens - 1, 0)

    @property
    def mean_logprob(self) -> float:
        """NaN when no token is scored (an empty or one-token document)."""
        return self.logprob / self.scored_tokens if self.scored_tokens else math.nan

    @property
    def perplexity(self) -> float:
        return math.exp(-self.mean_logprob) if self.scored_tokens else math.nan


def plan_batches(lengths: list[int], batch_size: int, max_new: int, max_batch_tokens: int = 0):
    """Split requests sorted by prompt length into [start, end) batches within both bounds."""
    start = 0
    while start < len(lengths):
        end = start + 1
        while end < len(lengths) and end - start < batch_size:
            # Sorted ascending, so lengths[end] is the batch's longest prompt if it joins.
            if max_batch_tokens and (end - start + 1) * (lengths[end] + max_new) > max_batch_tokens:
                break
            end += 1
        yield start, end
        start = end


def failed_score(error: BaseException) -> DocumentScore:
    return DocumentScore(0, 0.0, 0, f"{type(error).__name__}: {error}")


def plan_windows(n_tokens: int, window: int, stride: int) -> list[Window]:
    """Windows that score every token but the first exactly once.

    Window k starts at k * stride; it scores the tokens past the previous window's end, each
    with at least `window - stride` tokens of left context. A document of fewer than two tokens
    has nothing to score and takes no window.
    """
    if n_tokens < 2:
        return []
    assert 0 < stride < window, "stride must be in [1, window)"
    windows, begin, scored_from = [], 0, 1  # token 0 has no context: it is never predicted
    while True:
        end = min(begin + window, n_tokens)
        windows.append(Window(begin, end, scored_from))
        if end == n_tokens:
            return windows
        scored_from, begin = end, begin + stride


def token_logprobs(lm_head, hidden: torch.Tensor, targets: torch.Tensor, chunk_rows: int) -> torch.Tensor:
    """log p(target) for each row of hidden states [N, H] and target ids [N] -> float32 [N].

    The logits of `chunk_rows` rows at a time: log-softmax over the vocabulary, computed as the
    target's logit minus the log-sum-exp so that no second [rows, vocabulary] tensor is made.
    """
    out = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
    for start in range(0, hidden.shape[0], chunk_rows):
        logits = lm_head(hidden[start:start + chunk_rows]).float()
        picked = logits.gather(1, targets[start:start + chunk_rows, None]).squeeze(1)
        out[start:start + chunk_rows] = picked - torch.logsumexp(logits, dim=-1)
    return out


@torch.inference_mode()
def score_windows(model, windows: list[list[int]], scored_from: list[int], pad_id: int, device,
                  chunk_rows: int) -> list[float]:
    """Sum of log-probabilities of tokens [scored_from[i], len) of each window (ids), in one forward pass.

    Rows are right-padded: a real token attends only to the tokens before it, so the pads after
    it change nothing and no attention mask is needed (which keeps SDPA on its causal kernel).
    """
    rows, width = len(windows), max(len(w) for w in windows)
    input_ids = torch.full((rows, width), pad_id, dtype=torch.long)
    for r, ids in enumerate(windows):
        input_ids[r, :len(ids)] = torch.tensor(ids, dtype=torch.long)
    input_ids = input_ids.to(device)
    positions = torch.arange(width, device=device).expand(rows, width)
    # The transformer body alone: the LM head runs below, only where a token is predicted.
    hidden = model.base_model(input_ids=input_ids, position_ids=positions, use_cache=False).last_hidden_state

    # Position p predicts token p + 1: gather the positions whose next token is scored.
    row_index = torch.cat([torch.full((len(w) - s,), r, dtype=torch.long)
                           for r, (w, s) in enumerate(zip(windows, scored_from))]).to(device)
    col_index = torch.cat([torch.arange(s - 1, len(w) - 1, dtype=torch.long)
                           for w, s in zip(windows, scored_from)]).to(device)
    logprobs = token_logprobs(model.lm_head, hidden[row_index, col_index], input_ids[row_index, col_index + 1],
                              chunk_rows)
    # Sums in float64: a long document adds up many thousands of terms.
    sums = torch.zeros(rows, dtype=torch.float64, device=device).index_add_(0, row_index, logprobs.double())
    return sums.tolist()


class DocumentScorer:
    """Scores texts with a loaded PyTorch model and its tokenizer (see GenerationEngine)."""

    def __init__(self, model, tokenizer, device, max_forward_tokens: int):
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.max_forward_tokens = max_forward_tokens  # bounds the activations of one forward pass
        vocab = model.config.vocab_size
        self.lm_head_chunk_rows = max(1, LM_HEAD_CHUNK_BYTES // (4 * vocab))

    @classmethod
    def from_engine(cls, engine) -> "DocumentScorer":
        engine.backend.check_scoring("scoring documents")
        decoder = engine.decoder
        return cls(decoder.model, engine.tokenizer, decoder.device, decoder.prefill_chunk_tokens)

    def score(self, texts: list[str], params: ScoringParams) -> list[DocumentScore]:
        """One DocumentScore per text, in order; independent of how texts are grouped into calls."""
        faults.record_prompts(texts)
        encoded = self.tokenizer.encode_batch(texts)
        stride = params.window_stride
        plans = [plan_windows(len(ids), params.max_input_length, stride) for ids in encoded]
        # One request per window, sorted by length so that batches carry little padding.
        requests = sorted(((d, w) for d, plan in enumerate(plans) for w in plan), key=lambda r: r[1].end - r[1].begin)
        lengths = [w.end - w.begin for _, w in requests]
        bound = params.max_batch_tokens or (CPU_FORWARD_TOKENS if self.device.type == "cpu" else 0)
        bound = min(bound, self.max_forward_tokens) if bound else self.max_forward_tokens
        window_logprobs: dict[tuple[int, Window], float] = {}
        for start, end in plan_batches(lengths, params.batch_size, 0, bound):
            batch = requests[start:end]
            for d, _ in batch:
                faults.check_prompt(texts[d])
            window_logprobs.update(zip(batch, self._score_batch([encoded[d] for d, _ in batch], [w for _, w in batch])))
        # Summed in each document's window order, so that the result does not depend on the batches.
        return [DocumentScore(len(ids), math.fsum(window_logprobs[(d, w)] for w in plans[d]), len(plans[d]))
                for d, ids in enumerate(encoded)]

    def _score_batch(self, documents: list[list[int]], windows: list[Window]) -> list[float]:
        """Score a batch of windows; if it runs out of memory, each half on its own instead."""
        try:
            faults.check_batch(len(windows))
            return score_windows(
                self.model, [ids[w.begin:w.end] for ids, w in zip(documents, windows)],
                [w.first_scored - w.begin for w in windows],
                self.tokenizer.eos_token_id, self.device, self.lm_head_chunk_rows,
            )
        except (torch.OutOfMemoryError, MemoryError):
            if len(windows) == 1:
                raise
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            half = len(windows) // 2
            return self._score_batch(documents[:half], windows[:half]) + \
                self._score_batch(documents[half:], windows[half:])
