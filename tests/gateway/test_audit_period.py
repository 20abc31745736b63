"""The audit report of a recorded gateway session: every incident, level change and admin action of the period is
in it, nothing from before it, and a tampered row is reported as a broken chain."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable

import torch
from tests.gateway.conftest import Env

from bastion.data import Dataset
from bastion.gateway.audit_period import Period, period_summary


def _session(env: Env, digits: Dataset) -> tuple[float, float, str]:
    """A recorded session: a key made and revoked, an attack, its incident acknowledged and resolved, a reset."""
    gw, c = env.gateway, env.client
    gw.keys.create("before-the-period", ["predict:labels"])
    time.sleep(0.05)
    since = time.time()
    time.sleep(0.05)
    made = c.post("/v1/admin/keys", json={"name": "temp", "scopes": ["predict:labels"]}, headers=env.h(env.admin))
    assert made.status_code == 201, made.text
    body = {"inputs": digits.x_test[:3].tolist()}
    assert c.post("/v1/models/digits/predict", json=body, headers=env.h(env.labels)).status_code == 200
    g = torch.Generator().manual_seed(0)
    x = digits.x_test[7:8]
    for _ in range(40):  # a probing attack: near-duplicates of one image
        q = (x + 0.01 * torch.randn(x.shape, generator=g)).clamp(0, 1)
        c.post("/v1/models/digits/predict", json={"inputs": q.tolist()}, headers=env.h(env.scores))
    key_id = gw.keys.authenticate(env.scores).key_id
    (incident,) = [i for i in gw.store.list_incidents() if i.key_id == key_id]
    for status in ("acknowledged", "resolved"):
        r = c.post(
            f"/v1/admin/incidents/{incident.incident_id}",
            json={"status": status, "note": "drill"},
            headers=env.h(env.admin),
        )
        assert r.status_code == 200, r.text
    assert c.put(f"/v1/admin/threat/{key_id}", json={"level": None}, headers=env.h(env.admin)).status_code == 200
    assert c.delete(f"/v1/admin/keys/{made.json()['key_id']}", headers=env.h(env.admin)).status_code == 200
    return since, time.time() + 1, key_id


def test_the_period_holds_every_incident_level_change_and_admin_action(
    make_env: Callable[..., Env], digits: Dataset
) -> None:
    env = make_env(monitors=True)
    since, until, attacker = _session(env, digits)
    store = env.gateway.store
    s = period_summary(store, Period(since, until))
    assert s["chain"]["intact"] and s["chain"]["verified"] == store.count_events()
    assert {i["incident_id"] for i in s["incidents"]} == {i.incident_id for i in store.list_incidents()}
    (inc,) = s["incidents"]
    assert inc["key_id"] == attacker and inc["status"] == "resolved" and inc["acknowledged_by"] and inc["resolved_by"]
    steps = [t["what"] for t in inc["timeline"]]
    assert steps[0] == "alert" and "threat_level" in steps and steps[-1] == "resolved", steps
    changes = [c for c in store.list_level_changes() if since <= c.time < until]
    assert len(s["level_changes"]) == len(changes) >= 2  # raised by the attack, reset by the admin
    assert {c["new"] for c in s["level_changes"]} >= {"under_attack", "normal"}
    admin_events = {e.request_id for e in store.iter_events(0) if e.decision.startswith("admin:") and e.time >= since}
    assert {a["request_id"] for a in s["admin_actions"]} == admin_events and len(admin_events) >= 5
    assert [k["name"] for k in s["keys"]["created"]] == ["temp"]  # not the key made before the period
    assert [k["name"] for k in s["keys"]["revoked"]] == ["temp"]
    assert s["alerts"]["by_atlas"].get("AML.T0043", 0) >= 1
    activity = {a["key_id"]: a for a in s["keys"]["activity"]}
    assert activity[attacker]["answered"] == 40 and activity[attacker]["inputs"] == 40
    assert sum(s["timeline"]["answered"]) == sum(a.get("answered", 0) for a in activity.values())
    # a period after everything holds none of it
    later = period_summary(store, Period(until, until + 60))
    assert later["events"] == 0 and later["level_changes"] == [] and later["admin_actions"] == []


def test_a_tampered_row_is_reported_as_a_broken_chain(make_env: Callable[..., Env], digits: Dataset) -> None:
    env = make_env()
    body = {"inputs": digits.x_test[:1].tolist()}
    since = time.time() - 1
    for _ in range(5):
        env.client.post("/v1/models/digits/predict", json=body, headers=env.h(env.labels))
    ids = [e.event_id for e in env.gateway.store.iter_events(0)]
    with sqlite3.connect(env.tmp / "gateway.db") as db:  # someone edits the log behind the gateway's back
        db.execute("UPDATE audit_events SET decision = 'refused:invalid_key' WHERE event_id = ?", (ids[2],))
    s = period_summary(env.gateway.store, Period(since, time.time() + 1))
    assert not s["chain"]["intact"] and s["chain"]["broken_at"] == ids[2]
