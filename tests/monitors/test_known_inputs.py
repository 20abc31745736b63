"""The known_inputs monitor: imported fingerprints alert at once, and never on the model's own clean data."""

from __future__ import annotations

import torch

from bastion.data import Dataset
from bastion.models.zoo import TrainedModel
from bastion.monitors import MONITORS, QueryEvent, Severity
from bastion.monitors.fingerprint import FingerprintScheme
from bastion.monitors.known_inputs import KnownInput, KnownInputsMonitor


def _monitor(digits: Dataset) -> KnownInputsMonitor:
    kind = MONITORS.get("known_inputs")
    m = kind.build(kind.settings(), digits.x_train[:1000], torch.zeros(1000, 10))
    assert isinstance(m, KnownInputsMonitor)
    return m


def _event(model: TrainedModel, key: str, x: torch.Tensor) -> QueryEvent:
    with torch.no_grad():
        probs = model.classifier.predict_logits(x).softmax(1)
    return QueryEvent(key, "digits", 0.0, x.flatten(1), probs, probs.argmax(1))


def test_a_known_input_alerts_at_once_naming_its_indicator(digits_model: TrainedModel, digits: Dataset) -> None:
    m = _monitor(digits)
    assert m.scheme is not None
    hostile = (
        digits.x_test[5:6] + 0.1 * torch.sign(torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(0)))
    ).clamp(0, 1)
    (fp,) = m.scheme.fingerprints(hostile)
    summary = m.set_indicators([KnownInput("indicator--a", m.scheme, fp, 16, "AML.T0043", "Team A")])
    assert summary["active"] == 1
    replay = (hostile + 0.02 * torch.randn(hostile.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    (alert,) = m.observe(_event(digits_model, "k", torch.cat([digits.x_test[40:43], replay])))
    assert alert.severity is Severity.CRITICAL and alert.kind == "known_inputs" and alert.evidence["inputs"] == [3]
    assert alert.evidence["matches"][0]["indicator"] == "indicator--a" and "Team A" in alert.message
    assert m.observe(_event(digits_model, "k", digits.x_test[100:150])) == []


def test_indicators_matching_clean_data_are_narrowed_or_dropped(digits_model: TrainedModel, digits: Dataset) -> None:
    """A bundle listing the model's own training digits (careless, or meant to make the gateway refuse its own
    clients) changes nothing: those indicators are dropped; one near them is narrowed below them."""
    m = _monitor(digits)
    assert m.scheme is not None
    clean = m.scheme.fingerprints(digits.x_train[:3])
    near = m.scheme.fingerprints((digits.x_train[10:11] + 0.15).clamp(0, 1))[0]
    far = m.scheme.fingerprints(torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(0)))[0]
    given = [KnownInput(f"indicator--{i}", m.scheme, fp, 64) for i, fp in enumerate([*clean, near, far])]
    other = KnownInput("indicator--x", FingerprintScheme((1, 28, 28), margin=2), "00" * 32, 16)
    summary = m.set_indicators([*given, other])
    assert summary["dropped"] == 3 and summary["other_input_space"] == 1 and summary["active"] == 2
    assert summary["narrowed"] == 1  # "near" keeps a radius that stops short of the digit it was made from
    assert m.observe(_event(digits_model, "benign", digits.x_train[:300])) == []


def test_recent_fingerprints_are_bounded_per_key(digits_model: TrainedModel, digits: Dataset) -> None:
    m = _monitor(digits)
    m.observe(_event(digits_model, "k", digits.x_test[:100]))
    recent = m.recent_fingerprints("k")
    assert len(recent) == 32 and recent[-1] == m.scheme.fingerprints(digits.x_test[99:100])[0]  # type: ignore[union-attr]
    m.forget("k")
    assert m.recent_fingerprints("k") == []
