"""One row's next token from its numpy logits, with the settings of `sampling.py` (transformers'
order: repetition penalty, bans, then temperature, top-k, top-p and a seeded draw).

For engines that hand back one row's logits at a time (llamacpp). The draw walks the kept tokens
in vocabulary order, not in order of probability: two nearly tied logits that swap places between
two batches (float sums in another order) then move the draw only if it lands at their border, so
a row's samples do not depend on its batch.
"""

from __future__ import annotations

import numpy as np

NEG_INF = np.float32("-inf")


class RowSampler:
    """The state one row needs: the tokens it has seen (repetition penalty), the n-grams it has
    generated (noRepeatNgramSize) and its random generator (seeded per sample)."""

    def __init__(self, params, prompt: list[int], vocab_size: int, seed: int | None):
        self.params = params
        self.generated: list[int] = []
        self.seen = None
        if params.repetition_penalty != 1.0:  # over the prompt and the generated tokens, as transformers
            self.seen = np.zeros(vocab_size, dtype=bool)
            self.seen[[t for t in prompt if t < vocab_size]] = True
        self.ngrams: dict[tuple[int, ...], set[int]] = {}
        self.rng = np.random.Generator(np.random.PCG64(seed)) if params.do_sample else None

    def next_token(self, logits: np.ndarray, end_ids: np.ndarray, ignored: np.ndarray) -> int:
        """The row's next token from `logits` (left as they are: the samples of a prompt share them);
        `end_ids` cannot come before minOutputLength, `ignored` never."""
        params = self.params
        if self.seen is not None or params.no_repeat_ngram_size > 0 or ignored.size \
                or len(self.generated) < params.min_output_length:
            logits = logits.copy()
            self._shape(logits, end_ids, ignored)
        return self._choose(logits)

    def _shape(self, logits: np.ndarray, end_ids: np.ndarray, ignored: np.ndarray) -> None:
        """Penalties and bans, in place."""
        params = self.params
        if self.seen is not None:
            seen = logits[self.seen]
            logits[self.seen] = np.where(seen < 0, seen * params.repetition_penalty, seen / params.repetition_penalty)
        n = params.no_repeat_ngram_size
        if n > 0 and len(self.generated) >= n - 1:
            banned = self.ngrams.get(tuple(self.generated[len(self.generated) - n + 1:]))
            if banned:
                logits[list(banned)] = NEG_INF
        if len(self.generated) < params.min_output_length:
            logits[end_ids] = NEG_INF
        if ignored.size:
            logits[ignored] = NEG_INF

    def _choose(self, logits: np.ndarray) -> int:
        params = self.params
        if self.rng is None:
            return int(logits.argmax())
        scaled = logits.astype(np.float64) / params.temperature
        vocab = scaled.shape[0]
        kept = np.argpartition(scaled, -params.top_k)[-params.top_k:] if 0 < params.top_k < vocab \
            else np.arange(vocab)
        if params.top_p < 1.0:
            by_probability = kept[np.argsort(-scaled[kept], kind="stable")]
            probs = np.exp(scaled[by_probability] - scaled[by_probability[0]])
            cumulative = np.cumsum(probs / probs.sum())
            kept = by_probability[: int(np.searchsorted(cumulative, params.top_p)) + 1]
        kept = np.sort(kept)  # vocabulary order (see the module's doc)
        weights = np.exp(scaled[kept] - scaled[kept].max())
        cumulative = np.cumsum(weights)
        return int(kept[min(int(np.searchsorted(cumulative, self.rng.random() * cumulative[-1], side="right")),
                            len(kept) - 1)])

    def accept(self, token: int) -> None:
        self.generated.append(token)
        if self.seen is not None and token < self.seen.shape[0]:
            self.seen[token] = True
        n = self.params.no_repeat_ngram_size
        if n > 0 and len(self.generated) >= n:
            self.ngrams.setdefault(tuple(self.generated[-n:-1]), set()).add(token)
