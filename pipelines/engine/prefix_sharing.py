"""Which requests share a prompt prefix, so that its KV cache is computed once and reused.

Sorted by their token ids, prompts that share a prefix (the samples of one prompt, FIM holes of
one file, targets behind the same repository context) stand together. A prompt that shares at
least `min_shared` tokens with the one before it reuses the KV cache of the first prompt that
shares as much, and so waits for that prompt's prefill: a prefix cache (OpenVINO GenAI's, or
the PyTorch engine's prompt rows) can only give what has been computed.
"""

from __future__ import annotations

import os


def common_prefix(a: list[int], b: list[int]) -> int:
    # os.path.commonprefix compares any sequences element by element
    return len(os.path.commonprefix([a, b]))


def shared_prefixes(prompts: list[list[int]], min_shared: int) -> tuple[list[int], list[int | None]]:
    """(order, reuses): the prompts' indices sorted by token ids, and for each prompt the index of
    the earlier prompt (in that order) whose prefill it reuses, or None.

    Prompts that reuse the same one follow it in `order`; any order that keeps each such group
    together and in its order keeps every prompt after the one it reuses.
    """
    order = sorted(range(len(prompts)), key=lambda i: prompts[i])
    shared = [0] + [common_prefix(prompts[a], prompts[b]) for a, b in zip(order, order[1:])]
    reuses: list[int | None] = [None] * len(prompts)
    for k, n in enumerate(shared):
        if n < min_shared:
            continue
        j = k - 1
        # In sorted order, the prompt before j shares >= n tokens with k exactly when it does with j.
        while j > 0 and shared[j] >= n:
            j -= 1
        reuses[order[k]] = order[j]
    return order, reuses


def grouped(order: list[int], reuses: list[int | None], key) -> list[int]:
    """`order` regrouped: each prompt that reuses no other heads a group of those reusing it
    (directly or through a chain), and groups are sorted by `key(head)`."""
    head = {}
    for i in order:
        head[i] = i if reuses[i] is None else head[reuses[i]]
    groups: dict[int, list[int]] = {}
    for i in order:
        groups.setdefault(head[i], []).append(i)
    return [i for h in sorted(groups, key=key) for i in groups[h]]
