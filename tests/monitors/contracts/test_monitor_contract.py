"""The contract every registered monitor meets (one suite over the whole registry): built from default settings on
clean data it stays quiet on benign traffic, names its alerts after itself, forgets a key on request (so it
re-arms) and keeps state for a bounded number of keys."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from bastion.data import Dataset
from bastion.models.zoo import TrainedModel
from bastion.monitors import MONITORS, Monitor, QueryEvent


def _build(name: str, model: TrainedModel, digits: Dataset, **settings: object) -> Monitor:
    kind = MONITORS.get(name)
    clean = digits.x_train[:800]
    with torch.no_grad():
        probs = model.classifier.predict_logits(clean).softmax(1)
    return kind.build(kind.settings.model_validate(settings), clean, probs)


def _event(model: TrainedModel, key: str, x: torch.Tensor, t: float) -> QueryEvent:
    with torch.no_grad():
        probs = model.classifier.predict_logits(x).softmax(1)
    return QueryEvent(key, "digits", t, x.flatten(1), probs, probs.argmax(1))


@pytest.mark.parametrize("name", MONITORS.names())
def test_settings_are_strict_and_playbooks_are_stated(name: str) -> None:
    kind = MONITORS.get(name)
    with pytest.raises(ValidationError):
        kind.settings.model_validate({"no_such_setting": 1})
    assert kind.settings().enabled is True and kind.playbook_title and kind.playbook_steps


@pytest.mark.parametrize("name", MONITORS.names())
def test_quiet_on_benign_traffic(name: str, digits_model: TrainedModel, digits: Dataset) -> None:
    monitor = _build(name, digits_model, digits)
    alerts = []
    for i in range(300):  # one benign client sending the test set, one input a query
        alerts += monitor.observe(_event(digits_model, "benign", digits.x_test[i : i + 1], float(i)))
    assert alerts == []


def _hostile(model: TrainedModel, digits: Dataset, key: str, n: int = 300) -> list[QueryEvent]:
    """Near-duplicates of one input: what a query-based attack sends (flags probing; confidence and extraction may
    or may not react — the contract only needs forget() to re-arm whatever reacted)."""
    g = torch.Generator().manual_seed(0)
    base = digits.x_test[3:4]
    return [
        _event(model, key, (base + 0.02 * torch.randn(base.shape, generator=g)).clamp(0, 1), 1000.0 + i)
        for i in range(n)
    ]


@pytest.mark.parametrize("name", MONITORS.names())
def test_alerts_name_the_monitor_and_forget_re_arms(name: str, digits_model: TrainedModel, digits: Dataset) -> None:
    monitor = _build(name, digits_model, digits)
    events = _hostile(digits_model, digits, "attacker")
    first = [a for e in events for a in monitor.observe(e)]
    assert all(a.kind == name and a.key_id == "attacker" for a in first)
    if first:  # after forget(), the same stream is caught again
        monitor.forget("attacker")
        again = [a for e in events for a in monitor.observe(e)]
        assert again and again[0].kind == name
    monitor.forget("never-seen")  # forgetting an unknown key is harmless


@pytest.mark.parametrize("name", MONITORS.names())
def test_state_is_bounded_in_keys(name: str, digits_model: TrainedModel, digits: Dataset) -> None:
    monitor = _build(name, digits_model, digits)
    monitor.max_keys = 5  # type: ignore[attr-defined]
    monitor._keys.max_keys = 5  # type: ignore[attr-defined]
    for i in range(40):
        monitor.observe(_event(digits_model, f"k{i}", digits.x_test[i : i + 1], float(i)))
    assert len(monitor._keys) <= 5  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", MONITORS.names())
def test_prepared_features_give_the_same_alerts(name: str, digits_model: TrainedModel, digits: Dataset) -> None:
    """A monitor that defines ``prepare`` alerts exactly as it does without it when the gateway hands it the
    prepared features (the gateway computes them on its numeric worker); one without ``prepare`` ignores them."""
    own, handed = _build(name, digits_model, digits), _build(name, digits_model, digits)
    prepare = getattr(handed, "prepare", None)
    events = _hostile(digits_model, digits, "attacker", 120)
    want = [(a.kind, a.key_id, a.message) for e in events for a in own.observe(e)]
    got = []
    for e in events:
        prepared = {name: prepare(e.inputs)} if callable(prepare) else {}
        ev = QueryEvent(e.key_id, e.model, e.time, e.inputs, e.probs, e.labels, e.detections, prepared)
        got += [(a.kind, a.key_id, a.message) for a in handed.observe(ev)]
    assert got == want


@pytest.mark.parametrize("name", MONITORS.names())
def test_a_prepare_module_makes_what_prepare_makes(name: str, digits_model: TrainedModel, digits: Dataset) -> None:
    """A monitor's ``prepare_module`` (what the gateway compiles into the model's graph), finished by
    ``finish_prepared``, gives what ``prepare`` gives on the same inputs, for batches of one and many."""
    monitor = _build(name, digits_model, digits)
    make = getattr(monitor, "prepare_module", None)
    if make is None:
        assert not hasattr(monitor, "finish_prepared")
        return
    assert callable(getattr(monitor, "prepare", None)), "prepare_module comes with prepare"
    shape = digits_model.classifier.spec.input_shape
    module = make(shape)
    if module is None:
        return
    for x in (digits.x_test[:1], digits.x_test[:25]):
        with torch.no_grad():
            raw = module(x)
        assert raw.dim() == 2 and raw.shape[0] == x.shape[0]
        finish = getattr(monitor, "finish_prepared", None)  # without it, the module's output is used as it is
        got = raw if finish is None else finish(raw, x.flatten(1))
        want = monitor.prepare(x.flatten(1))  # type: ignore[attr-defined]
        assert got.dtype == want.dtype and got.shape == want.shape
        if got.dtype == torch.uint8:  # packed fingerprints: at most a bit in a thousand from rounding
            assert float((got != want).float().mean()) <= 1e-3
        else:
            assert torch.allclose(got, want, atol=1e-5)
