"""The decode loop against transformers' own `generate`, on a real StarCoder2-architecture model."""

import pytest
import torch

from pipelines.engine.generate import (
    Request,
    generate_batch,
    generate_requests,
    left_pad,
    prefill_groups,
    PASS_COST_TOKENS,
)
from pipelines.engine.params import GenerationParams

# Very different lengths; the tiny model's sliding window is 64 tokens, so the long ones exceed it.
PROMPT_TEXTS = [
    "def add(a, b):",
    "x",
    "import os\nimport sys\n" * 40,
    "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, item):\n" * 5,
    "# sort a list\n",
]


@pytest.fixture(scope="module")
def prompts(engine):
    encoded = engine.tokenizer.encode_batch(PROMPT_TEXTS)
    window = engine.model.config.sliding_window
    assert min(map(len, encoded)) == 1 and max(map(len, encoded)) > 2 * window
    return encoded


def hf_generate(model, prompts, **kwargs):
    ids, mask = left_pad(prompts, 0, torch.device("cpu"))
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, pad_token_id=0, eos_token_id=0, **kwargs)
    return [row[ids.shape[1]:].tolist() for row in out]


def test_greedy_batch_is_token_identical_to_transformers_generate(engine, prompts):
    ours = generate_batch(engine.model, prompts, GenerationParams(max_output_length=40), 0, engine.device)
    theirs = hf_generate(engine.model, prompts, max_new_tokens=40, do_sample=False)
    for out, ref in zip(ours, theirs):
        assert out.token_ids == ref[: len(out.token_ids)]
        assert out.finish_reason in ("eos", "length")
        if out.finish_reason == "length":
            assert len(out.token_ids) == 40
    assert len({tuple(o.token_ids[:10]) for o in ours}) == len(prompts), "outputs should differ per prompt"


def test_greedy_batched_equals_each_prompt_alone(engine, prompts):
    params = GenerationParams(max_output_length=30)
    batched = generate_batch(engine.model, prompts, params, 0, engine.device)
    for prompt, out in zip(prompts, batched):
        alone = generate_batch(engine.model, [prompt], params, 0, engine.device)[0]
        ref = hf_generate(engine.model, [prompt], max_new_tokens=30, do_sample=False)[0]
        assert out.token_ids == alone.token_ids == ref[: len(alone.token_ids)]


def test_prefill_in_chunks_gives_the_same_greedy_output(engine, prompts):
    """Long batches are prefilled in chunks of columns (bounded activations): same tokens, the
    chunks crossing the sliding window and the left padding."""
    params = GenerationParams(max_output_length=30)
    whole = generate_batch(engine.model, prompts, params, 0, engine.device)
    rows, width = len(prompts), max(map(len, prompts))
    chunked = generate_batch(engine.model, prompts, params, 0, engine.device, prefill_chunk_tokens=rows * 37)
    assert width > 3 * 37  # several chunks, each narrower than the window
    assert [o.token_ids for o in chunked] == [o.token_ids for o in whole]


def test_prompts_join_a_prefill_pass_only_while_their_pads_cost_less_than_a_pass():
    assert prefill_groups([20] * 6) == [list(range(6))]  # equal lengths: one pass, no pads
    # Shortest first; 300 -> 305 -> 310 adds 5 then 2 x 5 pads; 900 alone; 50..52 together.
    assert prefill_groups([300, 50, 305, 310, 900, 52, 51]) == [[1, 6, 5], [0, 2, 3], [4]]
    # A prompt that would add more pads than a pass costs starts a pass of its own.
    assert prefill_groups([10, 10, 10 + PASS_COST_TOKENS // 2 + 1]) == [[0, 1], [2]]
    assert prefill_groups([]) == []


def test_prompts_of_very_different_lengths_are_prefilled_without_pads(engine, prompts, monkeypatch):
    """Each pass's pads stay within what a pass costs, and the tokens are those of transformers'
    left-padded batch."""
    from pipelines.engine import generate as generate_module

    passes, real = [], generate_module.prefill_rows

    def counting(model, batch, *args, **kwargs):
        passes.append([len(p) for p in batch])
        return real(model, batch, *args, **kwargs)

    monkeypatch.setattr(generate_module, "prefill_rows", counting)
    ours = generate_batch(engine.model, prompts, GenerationParams(max_output_length=20), 0, engine.device)
    assert sorted(n for p in passes for n in p) == sorted(map(len, prompts)), "each prompt prefilled once"
    assert len(passes) > 1
    for lengths in passes:
        assert len(lengths) * max(lengths) - sum(lengths) <= PASS_COST_TOKENS * (len(lengths) - 1)
    theirs = hf_generate(engine.model, prompts, max_new_tokens=20, do_sample=False)
    for out, ref in zip(ours, theirs):
        assert out.token_ids == ref[: len(out.token_ids)]


def test_repetition_penalty_matches_transformers(engine, prompts):
    prompt = prompts[3]
    params = GenerationParams(max_output_length=25, repetition_penalty=1.3)
    ours = generate_batch(engine.model, [prompt], params, 0, engine.device)[0]
    ref = hf_generate(engine.model, [prompt], max_new_tokens=25, do_sample=False, repetition_penalty=1.3)[0]
    plain = generate_batch(engine.model, [prompt], GenerationParams(max_output_length=25), 0, engine.device)[0]
    assert ours.token_ids == ref[: len(ours.token_ids)]
    assert ours.token_ids != plain.token_ids


def test_min_output_length_suppresses_eos(engine):
    # Make EOS the most likely next token everywhere by banning nothing and asking for length.
    prompt = engine.tokenizer.encode("def f():\n    return 1\n")
    params = GenerationParams(max_output_length=12, min_output_length=12, ignore_token_ids=())
    out = generate_batch(engine.model, [prompt], params, 0, engine.device)[0]
    assert len(out.token_ids) == 12 and 0 not in out.token_ids


def test_ignore_token_ids_never_appear(engine, prompts):
    first = generate_batch(engine.model, prompts, GenerationParams(max_output_length=10), 0, engine.device)
    banned = sorted({o.token_ids[0] for o in first})
    again = generate_batch(
        engine.model, prompts, GenerationParams(max_output_length=10, ignore_token_ids=banned), 0, engine.device
    )
    for out in again:
        assert not set(out.token_ids) & set(banned)


def test_no_repeat_ngram_size_forbids_repeated_ngrams(engine, prompts):
    params = GenerationParams(max_output_length=60, no_repeat_ngram_size=2)
    for out in generate_batch(engine.model, prompts, params, 0, engine.device):
        bigrams = list(zip(out.token_ids, out.token_ids[1:]))
        assert len(bigrams) == len(set(bigrams))
    plain = generate_batch(engine.model, prompts, GenerationParams(max_output_length=60), 0, engine.device)
    assert any(len(set(zip(o.token_ids, o.token_ids[1:]))) < len(o.token_ids) - 1 for o in plain), (
        "the model repeats itself without the setting, so the check above means something"
    )


def test_stop_token_id_ends_the_row(engine, prompts):
    plain = generate_batch(engine.model, prompts[:1], GenerationParams(max_output_length=20), 0, engine.device)[0]
    stop_at = plain.token_ids[5]
    out = generate_batch(
        engine.model, prompts[:1], GenerationParams(max_output_length=20, stop_token_ids=[stop_at]), 0, engine.device
    )[0]
    assert out.finish_reason == "stop" and out.ends_with_stop_token
    assert out.token_ids == plain.token_ids[: plain.token_ids.index(stop_at) + 1]


def test_sampling_depends_only_on_the_seed_not_on_the_batch(engine, prompts):
    params = GenerationParams(max_output_length=20, do_sample=True, temperature=1.0, top_k=0, top_p=1.0, random_seed=1)
    seeds = [11, 22, 33, 44, 55]
    together = generate_batch(engine.model, prompts, params, 0, engine.device, seeds=seeds)
    reversed_ = generate_batch(engine.model, prompts[::-1], params, 0, engine.device, seeds=seeds[::-1])[::-1]
    alone = [generate_batch(engine.model, [p], params, 0, engine.device, seeds=[s])[0] for p, s in zip(prompts, seeds)]
    assert [o.token_ids for o in together] == [o.token_ids for o in reversed_] == [o.token_ids for o in alone]
    other_seed = generate_batch(engine.model, prompts, params, 0, engine.device, seeds=[s + 1 for s in seeds])
    assert [o.token_ids for o in other_seed] != [o.token_ids for o in together]
    greedy = generate_batch(engine.model, prompts, GenerationParams(max_output_length=20), 0, engine.device)
    assert [o.token_ids for o in greedy] != [o.token_ids for o in together]


def test_finished_rows_are_refilled_with_the_same_greedy_output(engine, prompts, monkeypatch):
    """Two rows at a time over five prompts (one past twice the sliding window): newcomers join
    running rows as others finish, and every prompt gets what it gets alone."""
    from pipelines.engine import batch_rows

    joins, real_join = [], batch_rows.BatchRows.join

    def counting(self, other):
        joins.append((len(self), len(other)))
        return real_join(self, other)

    monkeypatch.setattr(batch_rows.BatchRows, "join", counting)
    params = GenerationParams(max_output_length=30)
    requests = [Request(p) for p in prompts]
    refilled = generate_requests(engine.model, requests, params, 0, engine.device, max_rows=2)
    assert any(running == 1 for running, _ in joins), "a newcomer should join a row still decoding"
    for prompt, (out,) in zip(prompts, refilled):
        ref = hf_generate(engine.model, [prompt], max_new_tokens=30, do_sample=False)[0]
        assert out.token_ids == ref[: len(out.token_ids)]


def test_n_samples_share_one_prefill_and_draw_as_they_would_alone(engine, prompts, monkeypatch):
    from pipelines.engine import generate as generate_module

    prefilled, real = [], generate_module.prefill_rows

    def counting(model, batch, *args, **kwargs):
        prefilled.extend(map(tuple, batch))
        return real(model, batch, *args, **kwargs)

    monkeypatch.setattr(generate_module, "prefill_rows", counting)
    params = GenerationParams(max_output_length=16, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                              random_seed=1)
    seeds = [[100 * r + s for s in range(4)] for r in range(len(prompts))]
    requests = [Request(p, s) for p, s in zip(prompts, seeds)]
    shared = generate_requests(engine.model, requests, params, 0, engine.device, max_rows=8)
    assert sorted(prefilled) == sorted(map(tuple, prompts)), "each prompt prefilled once for its 4 samples"
    # Three rows at a time: a prompt's samples are split across admissions, its prefill still run once.
    prefilled.clear()
    split = generate_requests(engine.model, requests[::-1], params, 0, engine.device, max_rows=3)[::-1]
    assert sorted(prefilled) == sorted(map(tuple, prompts))
    for prompt, row_seeds, samples, other in zip(prompts, seeds, shared, split):
        alone = [generate_batch(engine.model, [prompt], params, 0, engine.device, seeds=[s])[0] for s in row_seeds]
        assert [o.token_ids for o in samples] == [o.token_ids for o in other] == [o.token_ids for o in alone]
        assert len({tuple(o.token_ids) for o in samples}) > 1, "samples of one prompt should differ"


def test_min_output_length_counts_each_rows_own_tokens(engine, prompts):
    """Rows joining later have generated fewer tokens: each is held to minOutputLength on its own."""
    params = GenerationParams(max_output_length=12, min_output_length=12)
    outputs = generate_requests(engine.model, [Request(p) for p in prompts], params, 0, engine.device, max_rows=2)
    assert all(len(out.token_ids) == 12 and 0 not in out.token_ids for (out,) in outputs)
