"""The continuous decode loop: prefill prompts, decode one token at a time, refill free rows.

Rows leave the batch as soon as they finish (their KV-cache rows are dropped), and waiting
requests take their places at the next step, within the row and token bounds. The n samples
of one prompt share its prefill: the prompt is run once and its KV cache copied to n rows.
A prompt that extends another's prefix (FIM holes of one file, targets behind one repository
context) can start from that prompt's KV cache and prefill only the rest. Positions and masks
follow `transformers.generate` for left padding, which keeps greedy output token-identical to it.
"""

from __future__ import annotations

from collections import deque
from typing import Callable

import torch

from pipelines.engine import sampling
from pipelines.engine.backends import (
    FINISH_EOS,
    FINISH_LENGTH,
    FINISH_STOP,
    Request,
    SequenceOutput,
)
from pipelines.engine.batch_rows import BatchRows
from pipelines.engine.params import GenerationParams
from pipelines.engine.prefix_sharing import common_prefix


def _cache_arg() -> str:
    """The name forward() takes the KV cache under: transformers 5.24 renamed past_key_values to
    cache (the old name warns from then on and goes in 5.40); vLLM's environments run older ones."""
    import transformers
    from packaging.version import Version

    return "cache" if Version(transformers.__version__) >= Version("5.24") else "past_key_values"


CACHE_ARG = _cache_arg()


def left_pad(prompts: list[list[int]], pad_id: int, device: torch.device):
    """Return input_ids [B, S] and attention_mask [B, S] with prompts aligned to the right."""
    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, ids in enumerate(prompts):
        input_ids[row, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, width - len(ids):] = 1
    return input_ids.to(device), attention_mask.to(device)


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    # [B, S]: 0-based positions of real tokens; pads get 0, as transformers does
    return (attention_mask.cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)


def prefill(model, input_ids, attention_mask, position_ids, cache, chunk_tokens: int = 0) -> torch.Tensor:
    # input_ids: [B, S], attention_mask: [B, P+S] (P columns already in the cache) -> logits of
    # the last position: [B, V]
    # A long batch goes through in chunks of columns of at most `chunk_tokens` tokens (rows x
    # columns), each attending to the cache of the chunks before it: activations stay bounded.
    rows, width = input_ids.shape
    past = attention_mask.shape[1] - width
    step = max(1, chunk_tokens // rows) if chunk_tokens and rows * width > chunk_tokens else width
    for start in range(0, width, step):
        end = min(start + step, width)
        out = model(
            input_ids=input_ids[:, start:end],
            attention_mask=attention_mask[:, :past + end],
            position_ids=position_ids[:, start:end],
            **{CACHE_ARG: cache},
            use_cache=True,
            logits_to_keep=1,
        )
    return out.logits[:, -1, :].float()


def decode_one_token(model, tokens, attention_mask, position_ids, cache) -> torch.Tensor:
    # tokens: [B, 1], attention_mask: [B, S+t], position_ids: [B, 1] -> logits [B, V]
    out = model(
        input_ids=tokens,
        attention_mask=attention_mask,
        position_ids=position_ids,
        **{CACHE_ARG: cache},
        use_cache=True,
    )
    return out.logits[:, -1, :].float()


def seen_token_matrix(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Prompt ids with pads replaced by the row's last prompt token, for the repetition penalty."""
    last = input_ids[:, -1:].expand_as(input_ids)
    return torch.where(attention_mask.bool(), input_ids, last)


def shape_logits(logits, params: GenerationParams, steps, seen, generated, banned_ids, end_ids):
    """Penalties and bans, in transformers' order; returns logits ready for token choice.

    steps: [B] tokens each row has generated so far (rows below minOutputLength cannot end).
    """
    logits = sampling.apply_repetition_penalty(logits, seen, params.repetition_penalty)
    logits = sampling.apply_no_repeat_ngram(logits, generated, params.no_repeat_ngram_size)
    too_short = [row for row, step in enumerate(steps) if step < params.min_output_length]
    if too_short and end_ids.numel():
        logits[torch.tensor(too_short)[:, None], end_ids[None, :]] = sampling.NEG_INF
    return sampling.suppress(logits, banned_ids)


# What one more forward pass costs, in prompt tokens: a pass over L tokens of the 111M benchmark
# model (one CPU thread) takes about 37 ms + 1.9 ms x L, so a pass is worth about 20 tokens.
PASS_COST_TOKENS = 20


def prefill_groups(lengths: list[int]) -> list[list[int]]:
    """The prompts (by index) to prefill together, shortest first: a left-padded pass computes
    its pads like real tokens (prompts of a partition differ widely: 8 random prompts of a code
    corpus carry 40% pads), so a prompt joins a group only while the pads it adds cost less than
    a pass of its own."""
    groups: list[list[int]] = []
    width = 0
    for i in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        if groups and len(groups[-1]) * (lengths[i] - width) <= PASS_COST_TOKENS:
            groups[-1].append(i)
        else:
            groups.append([i])
        width = lengths[i]
    return groups


def prefill_rows(model, prompts: list[list[int]], pad_id: int, device, chunk_tokens: int) -> BatchRows:
    """Prefill prompts as one left-padded batch: their rows, ready to choose a first token."""
    from transformers import DynamicCache

    input_ids, attention_mask = left_pad(prompts, pad_id, device)
    positions = positions_from_mask(attention_mask)
    cache = DynamicCache(config=model.config)
    logits = prefill(model, input_ids, attention_mask, positions, cache, chunk_tokens)
    return BatchRows(cache, attention_mask, positions[:, -1:] + 1, seen_token_matrix(input_ids, attention_mask), logits)


def extend_row(model, prefix: BatchRows, prefix_ids: list[int], prompt: list[int], chunk_tokens: int) -> BatchRows:
    """The row of `prompt`, started from the row of a prompt sharing its beginning: the shared
    columns are copied, the rest is prefilled (the last prompt token at least, for its logits)."""
    shared = common_prefix(prefix_ids, prompt)
    row = _copy_rows(prefix, [0])
    if shared == len(prompt) == len(prefix_ids):
        return row  # the same prompt: its logits too
    keep = min(shared, len(prompt) - 1)
    row.crop(keep)
    tail = torch.tensor([prompt[keep:]], dtype=torch.long, device=row.mask.device)
    row.mask = torch.cat([row.mask, torch.ones_like(tail)], dim=1)
    positions = torch.arange(keep, len(prompt), device=tail.device)[None, :]
    row.logits = prefill(model, tail, row.mask, positions, row.cache, chunk_tokens)
    row.seen = torch.cat([row.seen, tail], dim=1)
    row.next_pos = row.next_pos.new_full(row.next_pos.shape, len(prompt))
    return row


class Scheduler:
    """Which (request, sample) rows run next: waiting rows in the given order, admitted while the
    batch has fewer than `max_rows` rows and rows x (longest prompt + max_new) <= `max_tokens`."""

    def __init__(self, requests: list[Request], max_new: int, max_rows: int, max_tokens: int):
        self.requests = requests
        self.max_new = max_new
        self.max_rows = max_rows
        self.max_tokens = max_tokens
        self.waiting = deque((r, s) for r, request in enumerate(requests) for s in range(len(request.seeds)))
        self.reserved: list[int] = []  # prompt + max_new of each running row

    def admit(self) -> list[tuple[int, int]]:
        admitted = []
        while self.waiting and len(self.reserved) < self.max_rows:
            r, s = self.waiting[0]
            need = len(self.requests[r].prompt) + self.max_new
            rows = len(self.reserved) + 1
            # The first row always runs, whatever its size.
            if self.reserved and self.max_tokens and rows * max(need, *self.reserved) > self.max_tokens:
                break
            self.waiting.popleft()
            self.reserved.append(need)
            admitted.append((r, s))
        return admitted

    def finished(self, r: int) -> None:
        self.reserved.remove(len(self.requests[r].prompt) + self.max_new)


@torch.inference_mode()
def generate_requests(
    model,
    requests: list[Request],
    params: GenerationParams,
    eos_id: int,
    device: torch.device,
    max_rows: int,
    max_tokens: int = 0,
    stop_check: Callable[[list[int]], bool] | None = None,
    prefill_chunk_tokens: int = 0,
    reuses: list[int | None] | None = None,
) -> list[list[SequenceOutput]]:
    """Every sample of every request; outputs per request, per sample, in the given order.

    `reuses[r]`, an earlier request whose prompt starts as request r's does, or None: r starts
    from that prompt's KV cache (which must hold all its columns: shorter than any sliding window).

    At most `max_rows` rows decode together and rows x (longest prompt + max_output_length)
    stays within `max_tokens` (0: no bound); when a row finishes, a waiting one takes its place.
    Each sample draws from its own generator seeded by its seed, so its tokens depend only on the
    seed and the prompt, not on the batch around it. `prefill_chunk_tokens` (0: no bound) bounds
    the tokens of one prefill forward pass.
    """
    assert requests and all(r.prompt for r in requests), "every prompt needs at least one token"
    assert max_rows >= 1, "max_rows must be at least 1"
    end_ids = torch.tensor(sorted({eos_id, *params.stop_token_ids}), dtype=torch.long, device=device)
    banned_ids = torch.tensor(list(params.ignore_token_ids), dtype=torch.long, device=device)
    stop_ids = set(params.stop_token_ids)
    scheduler = Scheduler(requests, params.max_output_length, max_rows, max_tokens)

    generated: dict[tuple[int, int], list[int]] = {}
    outputs: dict[tuple[int, int], SequenceOutput] = {}
    logprobs: dict[tuple[int, int], float] = {}
    prefilled: dict[int, BatchRows] = {}  # a prompt's own row, kept while some of its samples wait
    reuses = reuses or [None] * len(requests)
    reusers_left = [0] * len(requests)  # requests not yet admitted that start from this prompt's row
    for j in reuses:
        if j is not None:
            reusers_left[j] += 1
    prefix_rows: dict[int, BatchRows] = {}  # a prompt's own row, kept while requests reusing it wait
    running: BatchRows | None = None
    keys: list[tuple[int, int]] = []  # (request, sample) of each running row
    generators: list[torch.Generator] = []

    def admit() -> None:
        nonlocal running
        admitted = scheduler.admit()
        if not admitted:
            return
        fresh = sorted({r for r, _ in admitted if r not in prefilled})
        direct = [r for r in fresh if reuses[r] is None]
        for group in prefill_groups([len(requests[r].prompt) for r in direct]):
            rows = prefill_rows(model, [requests[direct[i]].prompt for i in group], eos_id, device, prefill_chunk_tokens)
            for k, i in enumerate(group):
                prefilled[direct[i]] = rows if len(group) == 1 else _copy_rows(rows, [k])
        for r in fresh:  # in request order: a prompt's row exists before the rows reusing it
            j = reuses[r]
            if j is not None:
                prefilled[r] = extend_row(model, prefix_rows[j], requests[j].prompt, requests[r].prompt,
                                          prefill_chunk_tokens)
                reusers_left[j] -= 1
                if not reusers_left[j]:
                    del prefix_rows[j]
            if reusers_left[r]:
                prefix_rows[r] = _copy_rows(prefilled[r], [0])
        # One row per admitted sample: copies of its prompt's prefilled row.
        for r in dict.fromkeys(r for r, _ in admitted):
            samples = [s for q, s in admitted if q == r]
            still_waiting = samples[-1] < len(requests[r].seeds) - 1  # samples are admitted in order
            rows = _copy_rows(prefilled[r], [0] * len(samples)) if still_waiting or len(samples) > 1 else prefilled[r]
            if not still_waiting:
                del prefilled[r]
            for s in samples:
                keys.append((r, s))
                generated[(r, s)] = []
                logprobs[(r, s)] = 0.0
                if params.do_sample:
                    generators.append(torch.Generator(device="cpu").manual_seed(requests[r].seeds[s]))
            if running is None:
                running = rows
            else:
                running.join(rows)

    admit()
    while running is not None:
        row_generated = [generated[k] for k in keys]
        # The model's own distribution: taken before shape_logits, which edits the logits in place.
        model_logprobs = torch.log_softmax(running.logits, dim=-1) if params.output_logprobs else None
        shaped = shape_logits(running.logits, params, [len(g) for g in row_generated], running.seen,
                              row_generated, banned_ids, end_ids)
        chosen = sampling.next_tokens(
            shaped.cpu() if params.do_sample else shaped,
            params.do_sample, params.temperature, params.top_k, params.top_p, generators,
        ).to(device)
        if model_logprobs is not None:
            for key, lp in zip(keys, model_logprobs.gather(1, chosen[:, None]).squeeze(1).tolist()):
                logprobs[key] += lp

        keep = []
        for row, (key, token) in enumerate(zip(keys, chosen.tolist())):
            tokens = generated[key]
            tokens.append(token)
            finish, by_token = None, True
            if token == eos_id:
                finish = FINISH_EOS
            elif token in stop_ids or token in requests[key[0]].stop_ids:
                finish = FINISH_STOP
            elif stop_check is not None and stop_check(tokens):
                finish, by_token = FINISH_STOP, False
            elif len(tokens) == params.max_output_length:
                finish, by_token = FINISH_LENGTH, False
            if finish is None:
                keep.append(row)
                continue
            outputs[key] = SequenceOutput(tokens, finish, by_token, logprobs[key] if params.output_logprobs else None)
            scheduler.finished(key[0])

        if keep:
            if len(keep) < len(keys):
                keep_t = torch.tensor(keep, dtype=torch.long, device=device)
                running.select(keep_t)
                chosen = chosen[keep_t]
                keys = [keys[row] for row in keep]
                generators = [generators[row] for row in keep] if generators else generators
            running.append_tokens(chosen)
            running.logits = decode_one_token(model, chosen[:, None], running.mask, running.next_pos, running.cache)
            running.next_pos = running.next_pos + 1
        else:
            running, keys, generators = None, [], []
        admit()

    return [[outputs[(r, s)] for s in range(len(request.seeds))] for r, request in enumerate(requests)]


def _copy_rows(rows: BatchRows, take: list[int]) -> BatchRows:
    """New rows copied from `rows` (a row may be copied several times); `rows` stays as it is."""
    import copy

    index = torch.tensor(take, dtype=torch.long, device=rows.mask.device)
    cache = copy.copy(rows.cache)
    cache.layers = [copy.copy(layer) for layer in rows.cache.layers]
    copied = BatchRows(cache, rows.mask, rows.next_pos, rows.seen, rows.logits)
    copied.select(index)
    return copied


def generate_batch(
    model,
    prompts: list[list[int]],
    params: GenerationParams,
    eos_id: int,
    device: torch.device,
    seeds: list[int] | None = None,
    stop_check: Callable[[list[int]], bool] | None = None,
    row_stop_ids: list[frozenset[int]] | None = None,
    prefill_chunk_tokens: int = 0,
) -> list[SequenceOutput]:
    """Generate for every prompt (token ids, none empty) in one batch; outputs in the prompts' order.

    `row_stop_ids` adds stop tokens for single rows (fill-in-the-middle rows stop at FIM tokens).
    """
    requests = [Request(p, [seeds[i] if seeds else None], row_stop_ids[i] if row_stop_ids else frozenset())
                for i, p in enumerate(prompts)]
    outputs = generate_requests(model, requests, params, eos_id, device, max_rows=len(prompts),
                                stop_check=stop_check, prefill_chunk_tokens=prefill_chunk_tokens)
    return [samples[0] for samples in outputs]
