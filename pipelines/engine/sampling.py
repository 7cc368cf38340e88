"""Turn next-token logits into next tokens: penalties, bans, then greedy or seeded sampling.

The order and arithmetic follow Hugging Face's logits processors (repetition penalty,
no-repeat-ngram, min length, suppression, then temperature, top-k, top-p), so the same
settings mean the same thing here as in `transformers.generate`.
"""

from __future__ import annotations

import torch

NEG_INF = float("-inf")


def apply_repetition_penalty(logits: torch.Tensor, seen_ids: torch.Tensor, penalty: float) -> torch.Tensor:
    # logits: [B, V]; seen_ids: [B, T] token ids already in each row (repeats are harmless)
    if penalty == 1.0:
        return logits
    scores = torch.gather(logits, 1, seen_ids)
    scores = torch.where(scores < 0, scores * penalty, scores / penalty)
    return logits.scatter(1, seen_ids, scores)


def banned_ngram_tokens(generated: list[int], n: int) -> list[int]:
    """Tokens that would complete an n-gram already present in `generated`."""
    if n <= 0 or len(generated) < n:
        return []
    prefix = tuple(generated[len(generated) - n + 1:]) if n > 1 else ()
    banned = []
    for start in range(len(generated) - n + 1):
        if tuple(generated[start:start + n - 1]) == prefix:
            banned.append(generated[start + n - 1])
    return banned


def apply_no_repeat_ngram(logits: torch.Tensor, generated: list[list[int]], n: int) -> torch.Tensor:
    if n <= 0:
        return logits
    for row, tokens in enumerate(generated):
        banned = banned_ngram_tokens(tokens, n)
        if banned:
            logits[row, banned] = NEG_INF
    return logits


def suppress(logits: torch.Tensor, token_ids: torch.Tensor | None) -> torch.Tensor:
    if token_ids is not None and token_ids.numel():
        logits[:, token_ids] = NEG_INF
    return logits


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, NEG_INF)


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    if p >= 1.0:
        return logits
    sorted_logits, sorted_idx = torch.sort(logits, descending=False, dim=-1)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    remove_sorted = cumulative <= (1 - p)
    remove_sorted[..., -1:] = False  # always keep the most likely token
    remove = remove_sorted.scatter(1, sorted_idx, remove_sorted)
    return logits.masked_fill(remove, NEG_INF)


def sample(probs: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
    """One draw per row, each from its own generator, so a row's draw never depends on its batch."""
    # probs: [B, V] -> tokens: [B]
    draws = [torch.multinomial(probs[row], 1, generator=gen) for row, gen in enumerate(generators)]
    return torch.cat(draws)


def next_tokens(
    logits: torch.Tensor,
    do_sample: bool,
    temperature: float,
    top_k: int,
    top_p: float,
    generators: list[torch.Generator] | None,
) -> torch.Tensor:
    """Greedy argmax, or temperature/top-k/top-p sampling with per-row generators."""
    # logits: [B, V] float32 -> [B]
    if not do_sample:
        return torch.argmax(logits, dim=-1)
    logits = logits / temperature
    logits = top_k_filter(logits, top_k)
    logits = top_p_filter(logits, top_p)
    return sample(torch.softmax(logits, dim=-1), generators)
