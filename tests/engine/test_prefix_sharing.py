"""Shared prompt prefixes: found by ordering, computed once, and never changing an answer."""

from pathlib import Path

import pytest

from pipelines.engine.prefix_sharing import grouped, shared_prefixes


def test_prompts_behind_one_prefix_reuse_the_first_of_them():
    context = list(range(100, 140))
    prompts = [[7, 8, 9], context + [1, 2], [5] * 50, context + [1, 3], context + [4], context + [1, 2]]
    order, reuses = shared_prefixes(prompts, min_shared=32)
    assert [prompts[i] for i in order] == sorted(prompts)
    # Every later prompt behind the same 40 tokens reuses the first of them, not a chain.
    assert reuses == [None, None, None, 1, 1, 1]
    assert shared_prefixes([[1] * 10, [1] * 10], min_shared=32)[1] == [None, None]  # too short to reuse


def test_fim_holes_of_one_file_reuse_the_hole_before():
    """Hole k's prompt shares the file up to hole k - 1 with that prompt only: a chain."""
    text = list(range(1000, 1200))
    prompts = [text[:at] + [2] + text[at + 5:] for at in (120, 40, 80)]
    order, reuses = shared_prefixes(prompts, min_shared=32)
    assert order == [1, 2, 0] and reuses == [2, None, 1]


def test_groups_keep_each_prompt_after_the_one_it_reuses():
    context = list(range(100, 140))
    prompts = [context + [1], [3], context + [2], [2] * 60, [2] * 60 + [9]]
    order, reuses = shared_prefixes(prompts, min_shared=32)
    by_length = grouped(order, reuses, key=lambda head: len(prompts[head]))
    assert by_length == [1, 0, 2, 3, 4]
    assert all(by_length.index(reuses[i]) < by_length.index(i) for i in by_length if reuses[i] is not None)


def test_pytorch_prompts_behind_a_shared_prefix_prefill_only_their_rest(engine, monkeypatch):
    """Targets behind one context (the tiny model's window is 64 tokens: the rows fit it) start
    from the first target's KV cache; greedy output is what each prompt gets on its own."""
    from pipelines.engine import generate as generate_module
    from pipelines.engine.generate import Request
    from pipelines.engine.params import GenerationParams
    from pipelines.engine.torch_decoder import TorchDecoder

    context = engine.tokenizer.encode("import os\nimport sys\nimport json\n\n\ndef read_lines(path, encoding):\n    with open(path, encoding=encoding) as f:\n")
    assert 32 <= len(context) < 40
    tails = ["        return f.read()", "        return [l for l in f]", "        pass", "        x = 1\n"]
    prompts = [context + engine.tokenizer.encode(t) for t in tails] + [engine.tokenizer.encode("def add(a, b):")]
    assert max(map(len, prompts)) < engine.model.config.sliding_window
    prefilled = []
    real = generate_module.prefill

    def counting(model, input_ids, attention_mask, *args, **kwargs):
        prefilled.append(int(attention_mask[:, -input_ids.shape[1]:].sum()))  # tokens, not pads
        return real(model, input_ids, attention_mask, *args, **kwargs)

    monkeypatch.setattr(generate_module, "prefill", counting)
    params = GenerationParams(max_output_length=12)
    reusing = TorchDecoder(engine.model, engine.device, 0, prefix_caching=True)
    plain = TorchDecoder(engine.model, engine.device, 0, prefix_caching=False)
    shared = reusing.generate([Request(p) for p in prompts], params, None, max_rows=2)
    reused_tokens = sum(prefilled)
    prefilled.clear()
    alone = [plain.generate([Request(p)], params, None, max_rows=1)[0] for p in prompts]
    assert [o.token_ids for (o,) in shared] == [o.token_ids for (o,) in alone]
    # The context is prefilled once instead of four times (the rest of each target, the last
    # token at least, is prefilled on top of it).
    assert reused_tokens <= sum(map(len, prompts)) - 3 * (len(context) - 1)


openvino_genai = pytest.importorskip("openvino_genai")


@pytest.fixture(scope="module")
def repository_prompts():
    """Six targets behind one repository context of about 600 tokens, and two unrelated prompts."""
    import textwrap

    stdlib = Path(textwrap.__file__).parent  # (sys.prefix is a virtual environment's, without the stdlib)
    context = "<repo_name>demo<file_sep>lib/textwrap.py\n" + (stdlib / "textwrap.py").read_text()[:2000]
    target = (stdlib / "shlex.py").read_text()
    targets = [f"{context}<file_sep>lib/shlex.py\n{target[:120 * (k + 1)]}" for k in range(6)]
    return targets[:3] + ["def add(a, b):", "import os\n"] + targets[3:]


@pytest.fixture(scope="module")
def engines():
    from pipelines.engine.engine import GenerationEngine
    from pipelines.engine.params import ModelSpec
    from pipelines.models import bundled

    make = lambda caching: GenerationEngine.load(ModelSpec(  # noqa: E731
        source=str(bundled.DEMO_MODEL_OPENVINO), dtype="float32", num_threads=2, prefix_caching=caching))
    return make(True), make(False)


def test_openvino_prefix_caching_shares_blocks_and_keeps_greedy_output(engines, repository_prompts):
    from pipelines.engine.params import GenerationParams

    cached, plain = engines
    params = GenerationParams(max_output_length=24)
    with_reuse = [r[0].completion for r in cached.complete(repository_prompts, params)]
    without = [r[0].completion for r in plain.complete(repository_prompts, params)]
    assert with_reuse == without
    assert len(set(with_reuse)) > 1
    # The pipeline's own KV-cache usage: the six targets hold the context's blocks once.
    assert cached.decoder.peak_cache_usage < 0.6 * plain.decoder.peak_cache_usage


def test_openvino_samples_of_one_prompt_share_its_blocks_and_keep_their_draws(engines, repository_prompts):
    from pipelines.engine.params import GenerationParams

    cached, plain = engines
    params = GenerationParams(max_output_length=12, do_sample=True, temperature=1.0, random_seed=3,
                              n_return_sequences=4)
    prompt = repository_prompts[-1]
    shared = [c.completion for c in cached.complete([prompt], params)[0]]
    assert shared == [c.completion for c in plain.complete([prompt], params)[0]]
    assert len(set(shared)) > 1
    assert cached.decoder.peak_cache_usage < 0.6 * plain.decoder.peak_cache_usage
