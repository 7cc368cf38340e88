"""The batched decode loop: prefill a left-padded batch, then decode one token at a time.

Rows leave the batch as soon as they finish (their KV-cache rows are dropped), so finished
rows cost nothing. Positions and masks follow `transformers.generate` for left padding,
which keeps greedy output token-identical to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from pipelines.engine import sampling
from pipelines.engine.params import GenerationParams

FINISH_EOS = "eos"
FINISH_STOP = "stop"
FINISH_LENGTH = "length"


@dataclass
class SequenceOutput:
    token_ids: list[int]  # generated tokens, including the EOS / stop token that ended them
    finish_reason: str
    ends_with_stop_token: bool = False  # the last token is EOS or a stop token id, not text
    logprob: float | None = None  # sum of the model's log-probabilities of token_ids (outputLogProbs)


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
    # input_ids: [B, S] -> logits of the last position: [B, V]
    # A long batch goes through in chunks of columns of at most `chunk_tokens` tokens (rows x
    # columns), each attending to the cache of the chunks before it: activations stay bounded.
    rows, width = input_ids.shape
    step = max(1, chunk_tokens // rows) if chunk_tokens and rows * width > chunk_tokens else width
    for start in range(0, width, step):
        end = min(start + step, width)
        out = model(
            input_ids=input_ids[:, start:end],
            attention_mask=attention_mask[:, :end],
            position_ids=position_ids[:, start:end],
            cache=cache,  # transformers >= 5.24 (past_key_values is deprecated)
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
        cache=cache,  # transformers >= 5.24 (past_key_values is deprecated)
        use_cache=True,
    )
    return out.logits[:, -1, :].float()


def seen_token_matrix(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Prompt ids with pads replaced by the row's last prompt token, for the repetition penalty."""
    last = input_ids[:, -1:].expand_as(input_ids)
    return torch.where(attention_mask.bool(), input_ids, last)


def shape_logits(logits, params: GenerationParams, step, seen, generated, banned_ids, end_ids):
    """Penalties and bans, in transformers' order; returns logits ready for token choice."""
    logits = sampling.apply_repetition_penalty(logits, seen, params.repetition_penalty)
    logits = sampling.apply_no_repeat_ngram(logits, generated, params.no_repeat_ngram_size)
    if step < params.min_output_length:
        logits = sampling.suppress(logits, end_ids)
    return sampling.suppress(logits, banned_ids)


@torch.inference_mode()
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
    """Generate for every prompt (token ids, none empty); outputs in the prompts' order.

    `row_stop_ids` adds stop tokens for single rows (fill-in-the-middle rows stop at FIM tokens).
    `prefill_chunk_tokens` (0: no bound) bounds the tokens of one prefill forward pass.
    """
    assert prompts and all(prompts), "every prompt needs at least one token"
    from transformers import DynamicCache

    input_ids, attention_mask = left_pad(prompts, eos_id, device)
    positions = positions_from_mask(attention_mask)
    cache = DynamicCache(config=model.config)
    logits = prefill(model, input_ids, attention_mask, positions, cache, prefill_chunk_tokens)

    generators = None
    if params.do_sample:
        generators = [torch.Generator(device="cpu").manual_seed(s) for s in seeds]
    end_ids = torch.tensor(sorted({eos_id, *params.stop_token_ids}), dtype=torch.long, device=device)
    banned_ids = torch.tensor(list(params.ignore_token_ids), dtype=torch.long, device=device)
    stop_ids = set(params.stop_token_ids)

    slots = list(range(len(prompts)))  # batch slot -> prompt index
    generated: list[list[int]] = [[] for _ in prompts]
    finish: list[str | None] = [None] * len(prompts)
    by_token = [False] * len(prompts)
    logprobs = [0.0] * len(prompts) if params.output_logprobs else None
    seen = seen_token_matrix(input_ids, attention_mask)
    next_pos = positions[:, -1:] + 1

    for step in range(params.max_output_length):
        slot_generated = [generated[i] for i in slots]
        # The model's own distribution: taken before shape_logits, which edits the logits in place.
        model_logprobs = torch.log_softmax(logits, dim=-1) if logprobs is not None else None
        shaped = shape_logits(logits, params, step, seen, slot_generated, banned_ids, end_ids)
        chosen = sampling.next_tokens(
            shaped.cpu() if params.do_sample else shaped,
            params.do_sample, params.temperature, params.top_k, params.top_p, generators,
        ).to(device)
        if logprobs is not None:
            for idx, lp in zip(slots, model_logprobs.gather(1, chosen[:, None]).squeeze(1).tolist()):
                logprobs[idx] += lp

        keep = []
        for slot, (idx, token) in enumerate(zip(slots, chosen.tolist())):
            generated[idx].append(token)
            if token == eos_id:
                finish[idx], by_token[idx] = FINISH_EOS, True
            elif token in stop_ids or (row_stop_ids is not None and token in row_stop_ids[idx]):
                finish[idx], by_token[idx] = FINISH_STOP, True
            elif stop_check is not None and stop_check(generated[idx]):
                finish[idx] = FINISH_STOP
            elif step + 1 == params.max_output_length:
                finish[idx] = FINISH_LENGTH
            else:
                keep.append(slot)
        if not keep:
            break
        if len(keep) < len(slots):
            keep_t = torch.tensor(keep, dtype=torch.long, device=device)
            cache.batch_select_indices(keep_t)
            attention_mask, next_pos, chosen, seen = (t[keep_t] for t in (attention_mask, next_pos, chosen, seen))
            slots = [slots[s] for s in keep]
            if generators is not None:
                generators = [generators[s] for s in keep]

        attention_mask = torch.cat([attention_mask, attention_mask.new_ones((len(slots), 1))], dim=1)
        seen = torch.cat([seen, chosen[:, None]], dim=1)
        logits = decode_one_token(model, chosen[:, None], attention_mask, next_pos, cache)
        next_pos = next_pos + 1

    return [SequenceOutput(generated[i], finish[i], by_token[i], logprobs[i] if logprobs is not None else None)
            for i in range(len(prompts))]
