"""The extraction family in `assess`: a fidelity curve on a local model, a gate on it, the budget checked against
the attacker's pool before any work, and an endpoint's release policy visible in what a copy achieves."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from tests.gateway.conftest import Env, make_env, running

from bastion import HttpClassifier
from bastion.assess import run_assessment
from bastion.assess.policy import Policy
from bastion.attacks.extraction import Knowledge, SubstituteRecipe, extract
from bastion.data import Dataset
from bastion.errors import ConfigError
from bastion.models.zoo import TrainedModel


def _policy(params: dict[str, object], **extra: object) -> Policy:
    return Policy.model_validate({"samples": 100, "probes": [{"family": "extraction", "params": params}], **extra})


def test_curve_and_gate_on_a_local_model(digits_model: TrainedModel, digits: Dataset) -> None:
    gate = [{"probe": "extraction", "at": {"queries": 200}, "metric": "fidelity", "max": 0.5}]
    res = run_assessment(
        digits_model.classifier, digits.x_test, digits.y_test, _policy({"budget": 200, "epochs": 10}, thresholds=gate)
    )
    assert [r.at["queries"] for r in res.rows] == [25.0, 50.0, 100.0, 200.0]
    final = res.rows[-1].metrics["fidelity"]
    assert final.value >= 0.7 and final.n == 100  # judged on the assessed inputs
    assert res.gate == "fail"  # a copy that good for 200 queries breaks the gate
    section = res.results[0]
    assert section.payload.victim_queries == 200  # the copy's labels on the assessed inputs cost no extra queries


def test_budget_larger_than_the_pool_stops_before_any_work(digits_model: TrainedModel, digits: Dataset) -> None:
    with pytest.raises(ConfigError, match="cannot run"):  # 360 test inputs: 100 assessed, 260 in the pool
        run_assessment(digits_model.classifier, digits.x_test, digits.y_test, _policy({"budget": 1000}))
    with pytest.raises(ValueError, match="budget"):
        _policy({"budget": 0})


_ = make_env  # the gateway tests' fixture, used here too


def test_labels_only_through_the_gateway(make_env: Callable[..., Env], digits: Dataset) -> None:
    """The same attacker through a real server: full scores, then labels only; the copy knows what it got."""
    recipe = SubstituteRecipe(epochs=15, min_steps=200)
    got = {}
    for release, post in (("scores", []), ("labels", ["label_only"])):
        env = make_env(levels={"normal": {"postprocess": post}})
        with running(env.gateway) as url:
            remote = HttpClassifier(f"{url}/v1/models/digits/predict", digits.spec, api_key=env.scores, max_batch=100)
            r = extract(
                remote, digits.x_train[:400], budget=400, recipe=recipe, eval_x=digits.x_test, knowledge=Knowledge()
            )
        got[release] = r
        assert r.release == release and r.victim_queries == 400  # the reference labels are not the attack's
    assert got["scores"].final.fidelity >= 0.75 and got["labels"].final.fidelity >= 0.6


class _Degrading:
    """The digits model behind an endpoint that drops to labels only after 100 queries and says so, as
    HttpClassifier reports a gateway that raised the key's threat level."""

    def __init__(self, model: TrainedModel) -> None:
        self.inner, self.spec, self.queries = model.classifier, model.classifier.spec, 0
        self.degradations: list[str] = []

    def predict_logits(self, x: torch.Tensor) -> torch.Tensor:
        self.queries += x.shape[0]
        z = self.inner.predict_logits(x)
        if self.queries > 100:
            if not self.degradations:
                self.degradations.append("answered labels after answering scores")
            return torch.nn.functional.one_hot(z.argmax(1), self.spec.num_classes).float().clamp_min(1e-12).log()
        return z


def test_a_run_on_degraded_answers_is_never_a_pass(digits_model: TrainedModel, digits: Dataset) -> None:
    gate = [{"probe": "extraction", "at": {"queries": 200}, "metric": "fidelity", "max": 0.99}]
    res = run_assessment(
        _Degrading(digits_model), digits.x_test, digits.y_test, _policy({"budget": 200, "epochs": 5}, thresholds=gate)
    )
    assert not any(r.complete for r in res.rows) and "degraded" in res.rows[-1].note
    assert res.gate == "inconclusive"
