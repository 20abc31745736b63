"""The input-distribution monitor: service-wide drift windows, informational alerts that name a dominant key."""

from __future__ import annotations

import torch

from bastion.data import Dataset
from bastion.monitors import MONITORS, QueryEvent, Severity
from bastion.monitors.input_distribution import InputDistributionMonitor


def _event(key: str, x: torch.Tensor, t: float) -> QueryEvent:
    probs = torch.full((x.shape[0], 10), 0.1)
    return QueryEvent(key, "digits", t, x.flatten(1), probs, probs.argmax(1))


def _monitor(digits: Dataset, background: bool = False, consecutive: int = 2) -> InputDistributionMonitor:
    kind = MONITORS.get("input_distribution")
    st = kind.settings(window=100, background=background, consecutive=consecutive)
    m = kind.build(st, digits.x_train, torch.zeros(0))
    assert isinstance(m, InputDistributionMonitor)
    return m


def test_clean_traffic_from_many_keys_is_quiet(digits: Dataset) -> None:
    m = _monitor(digits)
    alerts = [a for i in range(360) for a in m.observe(_event(f"k{i % 7}", digits.x_test[i : i + 1], float(i)))]
    assert alerts == [] and m.windows_tested == 3


def test_drifted_traffic_raises_an_informational_alert_naming_the_key_that_sent_it(digits: Dataset) -> None:
    m = _monitor(digits)
    faded = digits.x_test * 0.7 + 0.15
    alerts = []
    for i in range(200):  # two windows: one drifted window is not enough (consecutive 2)
        key = "scanner" if i % 4 else f"other{i}"  # 75 of each window's 100 inputs from one key
        alerts += m.observe(_event(key, faded[i : i + 1], float(i)))
        if i == 99:
            assert alerts == []
    assert len(alerts) == 1
    a = alerts[0]
    assert a.kind == "input_distribution" and a.severity is Severity.INFO and a.key_id == "scanner"
    assert a.evidence["features_drifted"] > 0 and a.evidence["keys"]["scanner"] == 75
    assert a.evidence["mmd_p_value"] <= 0.005 or a.evidence["features_drifted"]
    assert len(a.evidence["windows_in_a_row"]) == 2


def test_drift_spread_over_keys_names_no_key(digits: Dataset) -> None:
    m = _monitor(digits)
    faded = digits.x_test * 0.7 + 0.15
    alerts = [a for i in range(200) for a in m.observe(_event(f"k{i % 5}", faded[i : i + 1], float(i)))]
    assert len(alerts) == 1 and alerts[0].key_id is None


def test_a_clean_window_between_drifted_ones_breaks_the_streak(digits: Dataset) -> None:
    m = _monitor(digits)
    faded = digits.x_test * 0.7 + 0.15
    stream = torch.cat([faded[:100], digits.x_test[100:200], faded[200:300]])
    assert [a for i in range(300) for a in m.observe(_event("k", stream[i : i + 1], float(i)))] == []


def test_in_the_background_the_alert_comes_with_a_later_request(digits: Dataset) -> None:
    m = _monitor(digits, background=True, consecutive=1)
    faded = digits.x_test * 0.7 + 0.15
    at_window = [a for i in range(100) for a in m.observe(_event("scanner", faded[i : i + 1], float(i)))]
    assert at_window == []  # the window is being tested on the worker thread, not on this request
    later = m.wait()
    assert len(later) == 1 and later[0].kind == "input_distribution" and later[0].key_id == "scanner"


def test_a_busy_service_tests_at_most_one_window_every_min_interval(digits: Dataset) -> None:
    """At 100 inputs a second, 100-input windows fill every second; with min_interval_s 5 most are skipped, so the
    test's CPU does not grow with traffic. A window filled 5 s later is tested again."""
    m = _monitor(digits)
    for i in range(300):
        m.observe(_event("k", digits.x_test[i : i + 1], i * 0.01))
    assert m.windows_tested == 1 and m.windows_skipped == 2
    for i in range(100):
        m.observe(_event("k", digits.x_test[i : i + 1], 10.0 + i * 0.01))
    assert m.windows_tested == 2
