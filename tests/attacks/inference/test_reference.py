"""Reference models: the vmapped trainer trains exactly what one-by-one training would, masks are balanced."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from bastion._torch import batch_slices, make_generator
from bastion.attacks.inference.reference import Recipe, ReferenceModels, _init, balanced_keep, train_references
from bastion.data import Dataset
from bastion.errors import ConfigError

RECIPE = Recipe("tabular-mlp", {"hidden": [32]}, epochs=3, batch_size=16, lr=1e-2)


def _one_by_one(recipe: Recipe, digits: Dataset, x: torch.Tensor, y: torch.Tensor, rows: torch.Tensor, seed: int):  # type: ignore[no-untyped-def]
    """Plain training of one model, in the order the vmapped trainer promises: init under ``seed``, batches from a
    generator seeded ``seed``."""
    net = _init(recipe, digits.spec, seed).train()
    opt = torch.optim.Adam(net.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    gen = make_generator(seed)
    for _ in range(recipe.epochs):
        order = rows[torch.randperm(rows.shape[0], generator=gen)]
        for s in batch_slices(rows.shape[0], recipe.batch_size):
            loss = F.cross_entropy(net(x[order[s]]), y[order[s]])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


def test_vmapped_training_equals_training_each_model_alone(digits: Dataset) -> None:
    x, y = digits.x_train[:120], digits.y_train[:120]
    keep = balanced_keep(4, 120, make_generator(0))
    refs = train_references(RECIPE, digits.spec, x, y, keep, seed=7, group=3)  # groups of 3 and 1: no group effect
    logits = refs.logits(digits.x_test[:50])
    for k in range(4):
        alone = _one_by_one(RECIPE, digits, x, y, keep[k].nonzero().squeeze(1), 7 + k)
        with torch.no_grad():
            expected = alone(digits.x_test[:50])
        assert torch.allclose(logits[k], expected, atol=1e-4), k
    assert not torch.allclose(logits[0], logits[1], atol=1e-2)  # different halves, different models


def test_balanced_keep_puts_every_point_in_half_the_models() -> None:
    keep = balanced_keep(8, 101, make_generator(3))
    assert keep.shape == (8, 101)
    assert torch.equal(keep.sum(1), torch.full((8,), 50))
    per_point = keep.sum(0)
    assert int((per_point == 4).sum()) >= 101 - 4 and int(per_point.max()) == 4  # odd pools: a few points sit out
    assert torch.equal(keep[0] & keep[1], torch.zeros(101, dtype=torch.bool))  # partners split the pool
    with pytest.raises(ConfigError, match="even"):
        balanced_keep(3, 100, make_generator(0))


def test_saved_reference_models_answer_the_same(digits: Dataset, tmp_path: Path) -> None:
    keep = balanced_keep(2, 60, make_generator(0))
    refs = train_references(RECIPE, digits.spec, digits.x_train[:60], digits.y_train[:60], keep, seed=1)
    refs.save(tmp_path / "refs.safetensors")
    back = ReferenceModels.load(tmp_path / "refs.safetensors")
    assert torch.equal(back.keep, keep) and back.recipe == RECIPE and back.seconds == refs.seconds
    assert torch.equal(back.logits(digits.x_test[:20]), refs.logits(digits.x_test[:20]))


def test_recipe_is_read_from_a_card_and_checked(digits_model) -> None:  # type: ignore[no-untyped-def]
    r = Recipe.from_card(digits_model.card)
    assert (r.architecture, r.epochs, r.batch_size, r.lr) == ("digits-cnn", 15, 128, 1e-3)
    with pytest.raises(ConfigError, match="epochs"):
        Recipe("tabular-mlp", epochs=0)
    with pytest.raises(ConfigError, match="same positive number"):
        train_references(
            RECIPE,
            digits_model.card.spec,
            torch.rand(10, 1, 8, 8),
            torch.zeros(10, dtype=torch.long),
            torch.ones(2, 9, dtype=torch.bool),
        )
