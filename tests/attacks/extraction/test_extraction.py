"""Model extraction: a substitute trained on a victim's answers agrees with it far above chance, from each kind of
release; an attacker who knows the release policy beats one who does not; bad settings are refused."""

from __future__ import annotations

import pytest
import torch

from bastion.attacks.extraction import Knowledge, SubstituteRecipe, extract, query
from bastion.data import Dataset
from bastion.defenses.postprocessing import create_chain, create_postprocessor
from bastion.errors import ConfigError, UnknownNameError
from bastion.models.zoo import TrainedModel

FAST = SubstituteRecipe(epochs=15, min_steps=200)


class Released:
    """The victim behind a release policy, as a client of a gateway would see it: log of the released scores."""

    def __init__(self, model: TrainedModel, policy: list[str | dict[str, object]], kind: str = "scores") -> None:
        self.inner, self.spec, self.queries = model.classifier, model.classifier.spec, 0
        self.post = create_chain(policy)
        self.last_output_kind = kind

    def predict_logits(self, x: torch.Tensor) -> torch.Tensor:
        self.queries += x.shape[0]
        with torch.no_grad():
            p = torch.softmax(self.inner.predict_logits(x), 1)
        return self.post(p).clamp_min(1e-12).log()


def test_a_thousand_queries_copy_the_victim(digits_model: TrainedModel, digits: Dataset) -> None:
    """Measured: fidelity 0.92-0.94 from logits and from labels (chance is about 0.1)."""
    for kind in ("logits", "labels"):
        r = extract(
            digits_model.classifier,
            digits.x_train[:1000],
            budget=1000,
            knowledge=Knowledge(kind=kind),
            recipe=FAST,
            eval_x=digits.x_test,
            eval_y=digits.y_test,
        )
        assert r.final.fidelity >= 0.85, kind
        assert [p.queries for p in r.curve] == [125, 250, 500, 1000] and r.victim_queries == 1000
        assert r.curve[-1].fidelity > r.curve[0].fidelity  # more queries, a better copy
        assert r.release == kind


def test_every_strategy_beats_chance(digits_model: TrainedModel, digits: Dataset) -> None:
    for strategy in ("knockoff-adaptive", "jacobian"):
        r = extract(
            digits_model.classifier,
            digits.x_train[:1000],
            budget=800,
            strategy=strategy,
            recipe=FAST,
            eval_x=digits.x_test,
        )
        assert r.final.fidelity >= 0.7 and r.final.accuracy is None, strategy


def test_averaging_beats_noise(digits_model: TrainedModel, digits: Dataset) -> None:
    noisy = Released(digits_model, [{"name": "noise", "sigma": 0.02, "seed": 0}])
    t = query(noisy, digits.x_test[:300], Knowledge(kind="scores", repeats=8))
    once = query(noisy, digits.x_test[:300], Knowledge(kind="scores"))
    with torch.no_grad():
        truth = torch.softmax(digits_model.classifier.predict_logits(digits.x_test[:300]), 1)
    assert t.probs is not None and once.probs is not None

    def runner_up(p: torch.Tensor) -> torch.Tensor:  # the noise keeps the top class; the rest is what it hides
        return p.topk(2, dim=1).indices[:, 1]

    right_once = float((runner_up(once.probs) == runner_up(truth)).float().mean())
    right_avg = float((runner_up(t.probs) == runner_up(truth)).float().mean())
    assert right_avg >= right_once + 0.05, (right_once, right_avg)  # measured 0.38 -> 0.48
    assert not t.precise and noisy.queries == 300 * 9


def test_knowing_the_reverse_sigmoid_helps(digits_model: TrainedModel, digits: Dataset) -> None:
    """Measured: the perturbation modelled in the loss gets the substitute's scores closer to the victim's."""
    spec = {"name": "reverse_sigmoid", "beta": 0.7, "gamma": 0.4}
    victim = Released(digits_model, [spec])
    common = {"budget": 600, "recipe": FAST, "eval_x": digits.x_test, "checkpoints": [600]}
    naive = extract(victim, digits.x_train[:600], knowledge=Knowledge(kind="scores"), **common)  # type: ignore[arg-type]
    aware = extract(
        victim,
        digits.x_train[:600],
        knowledge=Knowledge(kind="scores", perturbation=create_postprocessor(spec)),
        **common,  # type: ignore[arg-type]
    )
    with torch.no_grad():
        truth = torch.softmax(digits_model.classifier.predict_logits(digits.x_test), 1)

        def gap(r) -> float:  # type: ignore[no-untyped-def]
            return float((torch.softmax(r.substitute.predict_logits(digits.x_test), 1) - truth).abs().sum(1).mean())

    assert gap(aware) < gap(naive)
    assert "perturbation" in aware.release


def test_bad_settings_are_refused(digits_model: TrainedModel, digits: Dataset) -> None:
    clf = digits_model.classifier
    with pytest.raises(ConfigError, match="budget"):
        extract(clf, digits.x_train[:100], budget=0, eval_x=digits.x_test)
    with pytest.raises(ConfigError, match="pool has 100"):
        extract(clf, digits.x_train[:100], budget=500, eval_x=digits.x_test)
    with pytest.raises(UnknownNameError):
        extract(clf, digits.x_train[:100], budget=50, strategy="nope", eval_x=digits.x_test)
    with pytest.raises(ConfigError, match="repeats"):
        Knowledge(repeats=0)
    with pytest.raises(ConfigError, match="checkpoints"):
        extract(clf, digits.x_train[:100], budget=50, checkpoints=[60], eval_x=digits.x_test)


def test_rounded_scores_are_not_trusted_to_full_precision(digits_model: TrainedModel, digits: Dataset) -> None:
    exact = query(Released(digits_model, []), digits.x_test[:300], Knowledge(kind="scores"))
    rounded = query(
        Released(digits_model, [{"name": "round", "decimals": 2}]), digits.x_test[:300], Knowledge(kind="scores")
    )
    assert exact.precise and not rounded.precise
