"""Membership inference: the loss threshold is chance on indistinguishable sets, the calibrated attacks (LiRA,
RMIA) beat it on an overfit model, and the metrics read known scores right."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from bastion.attacks.inference import Recipe, loss_threshold, membership_inference
from bastion.attacks.inference.membership import evaluate_scores, logit_margin
from bastion.data import Dataset
from bastion.errors import ConfigError, InputValidationError, UnknownNameError
from bastion.models.zoo import TrainedModel, train_model


def test_identical_sets_are_exactly_chance(digits_model: TrainedModel, digits: Dataset) -> None:
    same = (digits.x_test[:100], digits.y_test[:100])
    res = loss_threshold(digits_model.classifier, same, same)
    assert res.auc == pytest.approx(0.5) and res.members == res.non_members == 100


def test_an_overfit_model_leaks_membership(digits: Dataset) -> None:
    small = dataclasses.replace(digits, x_train=digits.x_train[:200], y_train=digits.y_train[:200])
    overfit = train_model(small, epochs=100, seed=0, batch_size=32)  # measured AUC 0.60
    res = loss_threshold(overfit.classifier, (small.x_train, small.y_train), (digits.x_test[:200], digits.y_test[:200]))
    assert res.auc >= 0.56 and res.advantage > 0.1


def test_bad_input_is_refused(digits_model: TrainedModel, digits: Dataset) -> None:
    with pytest.raises(InputValidationError, match="at least 10"):
        loss_threshold(digits_model.classifier, (digits.x_test[:5], digits.y_test[:5]), (digits.x_test, digits.y_test))
    with pytest.raises(InputValidationError):
        loss_threshold(
            digits_model.classifier, (digits.x_test.flatten(1), digits.y_test), (digits.x_test, digits.y_test)
        )


def test_scores_rank_as_minus_the_loss_without_float32_ties() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(300, 10, generator=g) * 3
    y = torch.randint(0, 10, (300,), generator=g)
    loss = torch.nn.functional.cross_entropy(logits.double(), y, reduction="none")
    assert torch.equal(logit_margin(logits, y).argsort(), (-loss).argsort())
    # confidently right inputs: float32 losses are all exactly 0, the margins still order them
    confident = logits.clone()
    confident[torch.arange(300), y] = 40 + torch.arange(300).float() * 0.1
    f32 = torch.nn.functional.cross_entropy(confident, y, reduction="none")
    assert int((f32 == 0).sum()) == 300
    assert logit_margin(confident, y).unique().numel() == 300


@pytest.fixture(scope="module")
def overfit_mlp(digits: Dataset) -> tuple[TrainedModel, Dataset]:
    """An MLP trained 100 epochs on 200 digits: its members are memorised."""
    small = dataclasses.replace(digits, x_train=digits.x_train[:200], y_train=digits.y_train[:200])
    return train_model(
        small, architecture="tabular-mlp", arch_params={"hidden": [128]}, epochs=100, batch_size=32
    ), small


def test_calibrated_attacks_beat_the_loss_threshold(overfit_mlp, digits: Dataset, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Measured: loss AUC 0.64, TPR@1%FPR 0.01; LiRA and RMIA online AUC 0.71-0.73, TPR@1%FPR 0.12."""
    monkeypatch.setenv("BASTION_CACHE_DIR", str(tmp_path))
    target, small = overfit_mlp
    members, non_members = (small.x_train, small.y_train), (digits.x_test[:200], digits.y_test[:200])
    recipe = Recipe.from_card(target.card)
    rep = membership_inference(target.classifier, members, non_members, recipe=recipe, reference_models=16)
    by = {r.attack: r for r in rep.results}
    assert set(by) == {"loss", "lira-offline", "lira-online", "rmia-offline", "rmia-online"}
    for name in ("lira-online", "rmia-online", "rmia-offline"):
        assert by[name].auc >= by["loss"].auc + 0.04, name
        assert by[name].tpr_at_1pct_fpr >= by["loss"].tpr_at_1pct_fpr + 0.05, name
    assert rep.reference_models == 16 and rep.reference_seconds > 0 and not rep.reference_cached
    assert rep.recipe["architecture"] == "tabular-mlp"
    again = membership_inference(target.classifier, members, non_members, recipe=recipe, reference_models=16)
    assert again.reference_cached  # and the cached models give the same answers
    assert [(r.auc, r.tpr_at_01pct_fpr, r.roc) for r in again.results] == [
        (r.auc, r.tpr_at_01pct_fpr, r.roc) for r in rep.results
    ]


def test_metrics_of_known_scores() -> None:
    member = torch.tensor([True] * 1000 + [False] * 1000)
    perfect = evaluate_scores("x", member.double(), member)
    assert perfect.auc == 1.0 and perfect.tpr_at_01pct_fpr == 1.0 and perfect.balanced_accuracy == 1.0
    # 10 members score above every non-member, the rest are indistinguishable from them
    scores = torch.zeros(2000, dtype=torch.float64)
    scores[:10] = 5.0
    scores[10:1000] = torch.linspace(0, 1, 990, dtype=torch.float64)
    scores[1000:] = torch.linspace(0, 1, 1000, dtype=torch.float64)
    r = evaluate_scores("x", scores, member)
    assert r.tpr_at_01pct_fpr == pytest.approx(0.011) and r.tpr_at_1pct_fpr == pytest.approx(0.02, abs=0.001)
    assert r.members == r.non_members == 1000 and len(r.roc[0]) == len(r.roc[1]) > 2
    with pytest.raises(InputValidationError, match="non-finite"):
        evaluate_scores("x", torch.full((2000,), float("nan")), member)


def test_membership_inference_refuses_bad_settings(digits_model: TrainedModel, digits: Dataset) -> None:
    pair = (digits.x_test[:50], digits.y_test[:50])
    with pytest.raises(ConfigError, match="recipe"):
        membership_inference(digits_model.classifier, pair, pair, attacks=["lira-online"])
    with pytest.raises(ConfigError, match="even"):
        membership_inference(
            digits_model.classifier, pair, pair, recipe=Recipe.from_card(digits_model.card), reference_models=5
        )
    with pytest.raises(UnknownNameError, match="membership attack"):
        membership_inference(digits_model.classifier, pair, pair, attacks=["nope"])
    with pytest.raises(InputValidationError, match="at least 10"):
        membership_inference(digits_model.classifier, (digits.x_test[:5], digits.y_test[:5]), pair, attacks=["loss"])
