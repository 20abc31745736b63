"""Serve-time output transforms: each withholds or blurs information and never changes the top-1 label."""

from __future__ import annotations

import pytest
import torch

from bastion.defenses.postprocessing import (
    CalibratedNoise,
    LabelOnly,
    Release,
    ReverseSigmoid,
    Rounding,
    TopK,
    create_chain,
)
from bastion.errors import ConfigError, InputValidationError, UnknownNameError


def _probs(n: int = 500, k: int = 10, seed: int = 0, temp: float = 2.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(n, k, generator=g) * temp, dim=1)


def test_rounding_rounds_and_keeps_labels() -> None:
    p = _probs()
    out = Rounding(decimals=1)(p)
    assert torch.equal(out, p.round(decimals=1))
    assert len(torch.unique(out)) <= 11


def test_top_k_keeps_only_the_k_largest() -> None:
    p = _probs()
    out = TopK(k=3)(p)
    assert bool(((out > 0).sum(1) == 3).all())
    assert torch.equal(out.argmax(1), p.argmax(1))
    kept = out.topk(3, dim=1)
    assert torch.equal(kept.values, p.topk(3, dim=1).values)


def test_label_only_is_one_hot_of_the_argmax() -> None:
    p = _probs()
    out = LabelOnly()(p)
    assert torch.equal(out.sum(1), torch.ones(len(p))) and torch.equal(out.argmax(1), p.argmax(1))


def test_noise_blurs_repeated_answers_but_never_the_label() -> None:
    p = _probs(n=2000, temp=0.3)  # flat distributions: noise of 0.1 would often reorder the top class
    noise = CalibratedNoise(sigma=0.1, seed=1)
    a, b = noise(p), noise(p)
    assert not torch.equal(a, b)  # fresh noise on every answer
    assert torch.equal(a.argmax(1), p.argmax(1)) and torch.equal(b.argmax(1), p.argmax(1))
    assert torch.allclose(a.sum(1), torch.ones(len(p)), atol=1e-5) and bool((a >= 0).all())
    raw = (p + 0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1))).argmax(1)
    assert bool((raw != p.argmax(1)).any())  # the guarantee is doing work on this data
    assert float((a - p).abs().mean()) > 0.02


def test_noise_is_unpredictable_without_a_seed() -> None:
    p = _probs(n=50)
    assert not torch.equal(CalibratedNoise(sigma=0.05)(p), CalibratedNoise(sigma=0.05)(p))


def test_reverse_sigmoid_perturbs_keeps_labels_and_sums_to_one() -> None:
    p = _probs(n=2000)
    out = ReverseSigmoid(beta=1.0, gamma=0.4)(p)
    assert torch.equal(out.argmax(1), p.argmax(1))
    assert torch.allclose(out.sum(1), torch.ones(len(p)), atol=1e-5) and bool((out >= 0).all())
    assert float((out - p).abs().max()) > 0.05
    # deceptive: the released top score no longer grows with the model's confidence the way the original does
    corr = torch.corrcoef(torch.stack([p.max(1).values, out.max(1).values]))[0, 1]
    assert float(corr) < 0.99


def test_chain_releases_as_little_as_its_strictest_member() -> None:
    chain = create_chain([{"name": "top_k", "k": 5}, {"name": "round", "decimals": 2}, {"name": "top_k", "k": 2}])
    assert chain.release is Release.TOP_K and chain.k == 2
    assert create_chain(["label_only", "round"]).release is Release.LABELS
    assert create_chain([]).release is Release.SCORES
    out = chain(_probs())
    assert bool(((out > 0).sum(1) <= 2).all())


@pytest.mark.parametrize(
    ("spec", "error", "message"),
    [
        ([{"name": "round", "decimals": -1}], ConfigError, "decimals must be"),
        ([{"name": "top_k", "k": 0}], ConfigError, "k must be a positive"),
        ([{"name": "noise", "sigma": 0}], ConfigError, "sigma must be"),
        ([{"name": "reverse_sigmoid", "beta": 2.0}], ConfigError, "beta must be"),
        ([{"name": "round", "digits": 2}], ConfigError, "unexpected keyword"),
        ([{"decimals": 2}], ConfigError, "needs a 'name'"),
        (["blur"], UnknownNameError, "choose one of"),
        ("round", ConfigError, "must be a list"),
    ],
)
def test_bad_specs_are_refused_clearly(spec: object, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        create_chain(spec)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "scores",
    [torch.ones(3), torch.full((2, 3), float("nan")), torch.full((2, 3), 2.0), torch.ones(2, 3, dtype=torch.int64)],
)
def test_chain_refuses_what_is_not_probabilities(scores: torch.Tensor) -> None:
    with pytest.raises(InputValidationError):
        create_chain(["round"])(scores)
