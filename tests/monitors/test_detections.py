"""The adversarial_inputs monitor: a key is named when its detectors' flags exceed what clean traffic produces."""

from __future__ import annotations

import pytest
import torch

from bastion.errors import InputValidationError
from bastion.monitors import Detection, QueryEvent
from bastion.monitors.detections import DetectionMonitor


def _event(key: str, flagged: list[bool], t: float, fpr: float = 0.05) -> QueryEvent:
    n = len(flagged)
    f = torch.tensor(flagged)
    probs = torch.full((n, 10), 0.1)
    return QueryEvent(key, "m", t, torch.zeros(n, 4), probs, probs.argmax(1), (Detection("det", f.float(), f, fpr),))


def _stream(monitor: DetectionMonitor, key: str, rate: float, n: int, seed: int) -> list[str]:
    g = torch.Generator().manual_seed(seed)
    kinds = []
    for i in range(n):
        flag = bool(torch.rand(1, generator=g) < rate)
        kinds += [a.kind for a in monitor.observe(_event(key, [flag], float(i)))]
    return kinds


def test_flags_at_the_detectors_false_positive_rate_stay_quiet() -> None:
    monitor = DetectionMonitor()
    for seed in range(20):  # 20 benign keys x 1,000 inputs flagged at the calibrated 5%
        assert _stream(monitor, f"benign{seed}", 0.05, 1000, seed) == []


def test_a_key_whose_inputs_are_flagged_often_is_named_once_per_window_and_forget_re_arms() -> None:
    monitor = DetectionMonitor()
    first = []
    for i in range(300):
        first += monitor.observe(_event("attacker", [i % 2 == 0], float(i)))  # half flagged
    assert len(first) == 2  # at the first test with enough inputs, then once more after a full window
    alert = first[0]
    assert alert.kind == "adversarial_inputs" and alert.key_id == "attacker"
    assert alert.evidence["detector"] == "det" and alert.evidence["window"] >= 50
    assert "det detector flagged" in alert.message
    monitor.forget("attacker")
    again = [a for i in range(60) for a in monitor.observe(_event("attacker", [True], 1000.0 + i))]
    assert again and again[0].key_id == "attacker"


def test_batches_count_per_input_and_requests_without_detectors_are_ignored() -> None:
    monitor = DetectionMonitor()
    assert monitor.observe(_event("k", [True] * 60, 0.0))[0].evidence["flagged"] == 60
    empty = QueryEvent("k2", "m", 0.0, torch.zeros(1, 4), torch.full((1, 2), 0.5), torch.zeros(1, dtype=torch.long))
    assert monitor.observe(empty) == []


@pytest.mark.parametrize(
    ("settings", "problem"),
    [({"min_inputs": 300, "window": 200}, "min_inputs"), ({"p_value": 2.0}, "p_value"), ({"ratio": 0.5}, "ratio")],
)
def test_bad_settings_say_what_is_wrong(settings: dict[str, float], problem: str) -> None:
    with pytest.raises(InputValidationError, match=problem):
        DetectionMonitor(**settings)  # type: ignore[arg-type]
