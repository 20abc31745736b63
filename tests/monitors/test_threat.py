"""Threat levels: raised by alerts, decaying after quiet periods, pinned and reset by an admin."""

from __future__ import annotations

import pytest

from bastion.monitors import Alert, Severity
from bastion.monitors.threat import ThreatLevel, ThreatSettings, ThreatTracker


def _alert(key: str, severity: Severity = Severity.WARNING) -> Alert:
    return Alert("m", "probing", key, severity, "msg", 1.0, "AML.T0043", 0.0)


def test_warnings_raise_step_by_step_and_a_critical_at_once() -> None:
    t = ThreatTracker(ThreatSettings(window_s=100, elevated_after=1, under_attack_after=3, quiet_period_s=50))
    assert [tr.new for tr in t.observe([_alert("a")], 0)] == [ThreatLevel.ELEVATED]
    assert t.observe([_alert("a")], 1) == []
    changes = t.observe([_alert("a")], 2)
    assert [(c.key_id, c.new) for c in changes] == [("a", ThreatLevel.UNDER_ATTACK), (None, ThreatLevel.ELEVATED)]
    assert t.service_level is ThreatLevel.ELEVATED
    assert t.observe([_alert("b", Severity.CRITICAL)], 3)[0].new is ThreatLevel.UNDER_ATTACK
    assert t.observe([_alert("c", Severity.INFO)], 3) == []  # info alerts do not move levels


def test_levels_decay_one_step_per_quiet_period() -> None:
    t = ThreatTracker(ThreatSettings(quiet_period_s=10, service_elevated_keys=1))
    t.observe([_alert("a", Severity.CRITICAL)], 0)
    assert t.observe([], 9) == []
    down = t.observe([], 10)
    assert [(c.key_id, c.new) for c in down] == [("a", ThreatLevel.ELEVATED), (None, ThreatLevel.NORMAL)]
    assert [c.new for c in t.observe([], 100)] == [ThreatLevel.NORMAL]
    assert t.level("a") is ThreatLevel.NORMAL and t.snapshot() == {}


def test_pinned_levels_hold_until_reset() -> None:
    t = ThreatTracker(ThreatSettings(quiet_period_s=10))
    t.pin("a", ThreatLevel.UNDER_ATTACK, 0, "admin1", "drill")
    assert t.observe([], 1000) == [] and t.level("a") is ThreatLevel.UNDER_ATTACK
    reset = t.reset("a", 1001, "admin1", "done")
    assert reset[0].new is ThreatLevel.NORMAL and reset[0].actor == "admin1"
    assert t.observe([_alert("a")], 1002)[0].new is ThreatLevel.ELEVATED  # history was cleared: first warning


def test_parse_levels() -> None:
    assert ThreatLevel.parse("under attack") is ThreatLevel.UNDER_ATTACK
    with pytest.raises(ValueError, match="unknown threat level"):
        ThreatLevel.parse("severe")


def test_the_service_level_can_require_attacks_from_several_client_addresses() -> None:
    t = ThreatTracker(ThreatSettings(service_elevated_keys=1, service_under_attack_keys=2, service_distinct_clients=2))
    t.observe([_alert("a", Severity.CRITICAL)], 0, client="10.0.0.1")
    t.observe([_alert("b", Severity.CRITICAL)], 1, client="10.0.0.1")  # one client with two keys
    assert t.level("a") is t.level("b") is ThreatLevel.UNDER_ATTACK
    assert t.service_level is ThreatLevel.NORMAL
    raised = t.observe([_alert("c", Severity.CRITICAL)], 2, client="10.0.0.2")
    assert raised[-1].key_id is None and raised[-1].new is ThreatLevel.UNDER_ATTACK
    assert "from 2 client address(es)" in raised[-1].reason
