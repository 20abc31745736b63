"""Black-box attacks against a model behind a real HTTP server on loopback, including one that dies mid-attack."""

from __future__ import annotations

import pytest
import torch
from tests.model_server import serve_model

from bastion import HttpClassifier, Norm, ThreatModel
from bastion.attacks import HopSkipJump, Square
from bastion.data import Dataset
from bastion.models.zoo import TrainedModel


def _seed() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def test_square_through_http_matches_the_local_run(digits_model: TrainedModel, digits: Dataset) -> None:
    x, y = digits.x_test[:24], digits.y_test[:24]
    attack = Square(ThreatModel(Norm.LINF, 0.15), max_queries=60)
    local = attack.run(digits_model.classifier, x, y, generator=_seed())
    with serve_model(digits_model.classifier, output="scores") as url, HttpClassifier(url, digits.spec) as remote:
        r = attack.run(remote, x, y, generator=_seed())
        assert remote.queries == int(r.queries.sum())  # the server saw exactly the queries the result reports
    assert r.complete and r.error is None
    assert torch.equal(r.success, local.success)  # softmax scores give the same margins' ordering as logits
    assert r.success.any()


def test_hopskipjump_works_on_a_label_only_endpoint(digits_model: TrainedModel, digits: Dataset) -> None:
    x, y = digits.x_test[:10], digits.y_test[:10]
    attack = HopSkipJump(ThreatModel(Norm.L2, 1.5), max_queries=400, init_evals=20, max_evals=50)
    with serve_model(digits_model.classifier, output="labels") as url, HttpClassifier(url, digits.spec) as remote:
        r = attack.run(remote, x, y, generator=_seed())
        assert remote.last_output_kind == "labels"
        assert remote.queries == int(r.queries.sum())
    assert r.complete and r.success.any()
    assert bool((r.queries <= 401).all())  # the budget plus the final check
    assert float(r.norms.max()) <= 1.5 + 1e-5


@pytest.mark.parametrize(
    "attack",
    [
        Square(ThreatModel(Norm.LINF, 0.15), max_queries=200),
        HopSkipJump(ThreatModel(Norm.L2, 1.5), max_queries=400, init_evals=20, max_evals=50),
    ],
    ids=["square", "hopskipjump"],
)
def test_an_endpoint_failing_mid_attack_gives_a_marked_partial_result(
    attack: Square | HopSkipJump, digits_model: TrainedModel, digits: Dataset
) -> None:
    x, y = digits.x_test[:16], digits.y_test[:16]
    with (
        serve_model(digits_model.classifier, output="scores", fail_after=40) as url,
        HttpClassifier(url, digits.spec) as remote,
    ):
        r = attack.run(remote, x, y, generator=_seed())
    assert not r.complete and "HTTP 503" in (r.error or "")
    assert bool((r.adv_labels == -1).all())
    delta = (r.x_adv - x).flatten(1)
    size = delta.abs().amax(1) if attack.threat.norm is Norm.LINF else delta.norm(dim=1)
    assert float(size.max()) <= attack.threat.eps + 1e-5  # whatever came back respects the threat model
    # inputs reported broken really are adversarial (checked locally)
    if r.success.any():
        pred = digits_model.classifier.predict_logits(r.x_adv[r.success]).argmax(1)
        assert bool((pred != y[r.success]).all())
