"""GenerationEngine: text in, completions out, with the settings users set."""

import pytest

from pipelines.engine.engine import sequence_seed
from pipelines.engine.params import GenerationParams, InvalidParamError, ModelSpec

PROMPTS = ["def add(a, b):", "import numpy as np\n", "class Stack:\n    def push(self, x):\n"]


def test_results_come_back_in_prompt_order_whatever_the_batch_size(engine):
    params = GenerationParams(max_output_length=12)
    one = engine.complete(PROMPTS, params, batch_size=1)
    three = engine.complete(PROMPTS, params, batch_size=3)
    assert [r[0].text for r in one] == [r[0].text for r in three]
    for prompt, row in zip(PROMPTS, one):
        (c,) = row
        assert c.text == prompt + c.completion
        assert c.prompt_tokens == len(engine.tokenizer.encode(prompt))
        assert 1 <= c.completion_tokens <= 12


def test_return_full_text_false_returns_the_completion_only(engine):
    full = engine.complete(PROMPTS[:1], GenerationParams(max_output_length=8))[0][0]
    only = engine.complete(PROMPTS[:1], GenerationParams(max_output_length=8, return_full_text=False))[0][0]
    assert only.text == full.completion and full.text == PROMPTS[0] + full.completion


def test_completion_text_is_the_decoded_generated_tokens(engine):
    c = engine.complete(PROMPTS[:1], GenerationParams(max_output_length=10))[0][0]
    prompt_ids = engine.tokenizer.encode(PROMPTS[0])
    full_ids = engine.tokenizer.encode(c.text)
    assert full_ids[: len(prompt_ids)] == prompt_ids


def test_long_prompts_are_cut_from_the_left_and_flagged(engine):
    long_prompt = "x = 1\n" * 200 + "def tail():"
    c = engine.complete([long_prompt, PROMPTS[0]], GenerationParams(max_output_length=5, max_input_length=32))
    assert c[0][0].truncated and c[0][0].prompt_tokens == 32
    assert not c[1][0].truncated
    tail_only = engine.complete(
        [engine.tokenizer.decode(engine.tokenizer.encode(long_prompt)[-32:])],
        GenerationParams(max_output_length=5, max_input_length=32, return_full_text=False),
    )[0][0]
    assert tail_only.completion == c[0][0].completion


def test_stop_strings_end_generation_and_are_not_returned(engine):
    free = engine.complete(PROMPTS, GenerationParams(max_output_length=30))
    # Pick a stop string that the free-running completion of the first prompt contains.
    text = free[0][0].completion
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    assert stop
    stopped = engine.complete(PROMPTS[:1], GenerationParams(max_output_length=30, stop_strings=[stop]))[0][0]
    assert stopped.finish_reason == "stop"
    assert stop not in stopped.completion
    assert text.startswith(stopped.completion)
    assert stopped.completion == text[: text.find(stop)]
    assert stopped.completion_tokens < free[0][0].completion_tokens


def test_empty_prompt_is_answered_without_generation(engine):
    (c,) = engine.complete([""], GenerationParams(max_output_length=5))[0]
    assert (c.text, c.completion, c.completion_tokens, c.finish_reason) == ("", "", 0, "empty_input")


def test_n_return_sequences_gives_distinct_reproducible_samples(engine):
    params = GenerationParams(max_output_length=10, do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
                              random_seed=7, n_return_sequences=3)
    first = engine.complete(PROMPTS, params, batch_size=4)
    again = engine.complete(PROMPTS[::-1], params, batch_size=2)[::-1]
    assert [[c.text for c in row] for row in first] == [[c.text for c in row] for row in again]
    for prompt, row in zip(PROMPTS, first):
        assert len(row) == 3 and len({c.text for c in row}) == 3
        assert [c.seed for c in row] == [sequence_seed(7, prompt, i) for i in range(3)]


def test_sampling_needs_a_seed_and_n_sequences_need_sampling(engine):
    with pytest.raises(InvalidParamError, match="randomSeed"):
        engine.complete(PROMPTS, GenerationParams(do_sample=True))
    with pytest.raises(InvalidParamError, match="nReturnSequences"):
        engine.complete(PROMPTS, GenerationParams(n_return_sequences=2))


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"top_p": 1.5}, "topP"),
        ({"max_output_length": -1}, "maxOutputLength"),
        ({"temperature": 0}, "temperature"),
        ({"top_k": -3}, "topK"),
        ({"min_output_length": 30, "max_output_length": 20}, "minOutputLength"),
        ({"stop_strings": [""]}, "stopStrings"),
    ],
)
def test_bad_generation_params_are_rejected_with_their_name(kwargs, name):
    with pytest.raises(InvalidParamError, match=name):
        GenerationParams(**kwargs)


def test_bad_model_spec_values_are_rejected():
    with pytest.raises(InvalidParamError, match="dtype"):
        ModelSpec(source="/x", dtype="fp8")
    with pytest.raises(InvalidParamError, match="device"):
        ModelSpec(source="/x", device="tpu")
    with pytest.raises(InvalidParamError, match="kvCacheSizeGB"):
        ModelSpec(source="/x", kv_cache_gb=0)


def test_batches_respect_the_row_and_token_bounds():
    from pipelines.engine.scoring import plan_batches

    lengths = [1, 2, 3, 10, 10, 50]
    assert list(plan_batches(lengths, 4, 10)) == [(0, 4), (4, 6)]
    bounded = list(plan_batches(lengths, 4, 10, max_batch_tokens=40))
    assert bounded == [(0, 3), (3, 5), (5, 6)]  # one row alone may exceed the bound
    for start, end in bounded[:-1]:
        assert (end - start) * (lengths[end - 1] + 10) <= 40
    assert [i for s, e in bounded for i in range(s, e)] == list(range(6))


def test_token_bound_does_not_change_greedy_output(engine):
    params = GenerationParams(max_output_length=8)
    assert [r[0].text for r in engine.complete(PROMPTS, params, 8, max_batch_tokens=30)] == \
        [r[0].text for r in engine.complete(PROMPTS, params, 8)]


def test_running_rows_stay_within_the_kv_cache_memory(engine, monkeypatch):
    from pipelines.engine import generate as generate_module
    from pipelines.engine.memory_plan import kv_bytes_per_token

    config = engine.model.config
    head_dim = config.hidden_size // config.num_attention_heads
    per_token = 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * 4  # fp32
    assert kv_bytes_per_token(config.to_dict(), 4) == per_token
    assert engine.decoder.kv_token_budget == 2**30 // per_token  # the default: 1 GiB

    running, real = [], generate_module.Scheduler.admit

    def recording(self):
        admitted = real(self)
        running.append(len(self.reserved) * max(self.reserved, default=0))  # rows x (longest prompt + new)
        return admitted

    monkeypatch.setattr(generate_module.Scheduler, "admit", recording)
    params = GenerationParams(max_output_length=8)
    unbounded = [r[0].text for r in engine.complete(PROMPTS, params, 8)]
    longest = max(len(engine.tokenizer.encode(p)) for p in PROMPTS) + 8
    assert running[0] == 3 * longest  # all three rows fit the default cache at once
    running.clear()
    monkeypatch.setattr(engine.decoder, "kv_token_budget", 30)
    assert [r[0].text for r in engine.complete(PROMPTS, params, 8)] == unbounded
    assert max(running) <= 30 and len(running) > 1


def test_scheduler_admits_rows_within_both_bounds():
    from pipelines.engine.generate import Request, Scheduler

    requests = [Request([1] * n, [None, None]) for n in (2, 3, 5)]  # two samples each
    scheduler = Scheduler(requests, max_new=5, max_rows=3, max_tokens=0)
    assert scheduler.admit() == [(0, 0), (0, 1), (1, 0)]
    assert scheduler.admit() == []  # full
    scheduler.finished(0)
    assert scheduler.admit() == [(1, 1)]
    bounded = Scheduler(requests, max_new=5, max_rows=8, max_tokens=30)
    assert bounded.admit() == [(0, 0), (0, 1), (1, 0)]  # a fourth row: 4 x 8 tokens > 30
    lone = Scheduler([Request([1] * 40)], max_new=5, max_rows=8, max_tokens=30)
    assert lone.admit() == [(0, 0)]  # a row larger than the bound still runs, alone


def test_duplicate_prompts_are_generated_once_with_the_same_answer(engine, monkeypatch):
    from pipelines.engine import generate as generate_module

    prefilled = []
    real = generate_module.prefill_rows

    def counting(model, prompts, *args, **kwargs):
        prefilled.extend(prompts)
        return real(model, prompts, *args, **kwargs)

    monkeypatch.setattr(generate_module, "prefill_rows", counting)
    texts = [PROMPTS[0], PROMPTS[1], PROMPTS[0], PROMPTS[0]]
    results = engine.complete(texts, GenerationParams(max_output_length=6), batch_size=8)
    assert len(prefilled) == 2
    assert results[0][0].text == results[2][0].text == results[3][0].text
    assert results[0][0].completion_tokens == results[3][0].completion_tokens
