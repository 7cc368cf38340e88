"""Logits shaping against transformers' own processors, on random logits."""

import pytest
import torch
from transformers import (
    RepetitionPenaltyLogitsProcessor,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from pipelines.engine import sampling


@pytest.fixture
def logits():
    return torch.randn(4, 1000, generator=torch.Generator().manual_seed(0)) * 3


@pytest.mark.parametrize("k", [1, 5, 50])
def test_top_k_matches_transformers(logits, k):
    expected = TopKLogitsWarper(top_k=k)(None, logits.clone())
    assert torch.equal(sampling.top_k_filter(logits.clone(), k), expected)
    assert (sampling.top_k_filter(logits, k) > float("-inf")).sum(dim=-1).tolist() == [k] * 4


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_top_p_matches_transformers(logits, p):
    expected = TopPLogitsWarper(top_p=p)(None, logits.clone())
    assert torch.equal(sampling.top_p_filter(logits.clone(), p), expected)


def test_repetition_penalty_matches_transformers(logits):
    seen = torch.randint(0, 1000, (4, 30), generator=torch.Generator().manual_seed(1))
    expected = RepetitionPenaltyLogitsProcessor(penalty=1.7)(seen, logits.clone())
    assert torch.allclose(sampling.apply_repetition_penalty(logits.clone(), seen, 1.7), expected)


def test_banned_ngram_tokens():
    assert sampling.banned_ngram_tokens([1, 2, 3, 1, 2], 3) == [3]
    assert sampling.banned_ngram_tokens([1, 2, 3, 1], 2) == [2]
    assert sampling.banned_ngram_tokens([5, 5], 1) == [5, 5]
    assert sampling.banned_ngram_tokens([1, 2], 3) == []


def test_sampling_with_the_same_generator_seed_repeats(logits):
    probs = torch.softmax(logits, dim=-1)
    draw = lambda seed: sampling.sample(probs, [torch.Generator().manual_seed(seed + i) for i in range(4)])
    assert torch.equal(draw(7), draw(7))
    assert not torch.equal(draw(7), draw(8))
