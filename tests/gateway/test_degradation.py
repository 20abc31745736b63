"""Monitors, threat levels and incidents end to end: a real attack through HTTP gets its key flagged and degraded."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import torch
from tests.gateway.conftest import Env, running

from bastion import HttpClassifier, Norm, ThreatModel
from bastion.attacks import Square
from bastion.data import Dataset


def test_square_through_the_gateway_is_flagged_and_the_key_degraded(
    make_env: Callable[..., Env], digits: Dataset
) -> None:
    env = make_env(monitors=True)
    spec = env.gateway.models["digits"].spec
    with running(env.gateway) as url:
        remote = HttpClassifier(f"{url}/v1/models/digits/predict", spec, api_key=env.scores, max_batch=64)
        x, y = digits.x_test[:5], digits.y_test[:5]
        Square(ThreatModel(Norm.LINF, 0.1), max_queries=60).run(
            remote, x, y, generator=torch.Generator().manual_seed(0)
        )
        with httpx.Client(base_url=url, timeout=30) as client:
            after = client.post(
                "/v1/models/digits/predict",
                json={"inputs": digits.x_test[100:101].tolist()},
                headers=env.h(env.scores),
            ).json()
            # the attacker's key now gets labels only (the under-attack policy); another key still gets scores,
            # rounded: one key under attack makes the service elevated
            assert after["threat_level"] == "under_attack" and after["release"] == "labels" and "scores" not in after
            other = client.post(
                "/v1/models/digits/predict", json={"inputs": digits.x_test[100:101].tolist()}, headers=env.h(env.admin)
            ).json()
            # an established key keeps its own (normal) level: one attacker does not degrade paying clients
            assert other["release"] == "scores" and other["threat_level"] == "normal"
            _, fresh = env.gateway.keys.create("new-client", ["predict:scores"])
            new = client.post(
                "/v1/models/digits/predict", json={"inputs": digits.x_test[100:101].tolist()}, headers=env.h(fresh)
            ).json()
            assert new["threat_level"] == "elevated"  # a key created during the attack gets the service's level
            incidents = client.get("/v1/admin/incidents", headers=env.h(env.admin)).json()["incidents"]
    probing = [i for i in incidents if i["kind"] == "probing"]
    assert len(probing) == 1
    inc = probing[0]
    assert inc["atlas"] == "AML.T0043" and inc["status"] == "open" and inc["evidence"]
    assert inc["evidence"][0]["evidence"]["queries"] <= 200  # flagged within 200 queries
    assert any(a["action"] == "threat_level" and a["detail"]["to"] == "under_attack" for a in inc["actions"])
    key_id = inc["key_id"]
    assert [c.new for c in env.gateway.store.list_level_changes(key_id)] == ["under_attack"]


def test_admin_can_reset_a_flagged_key_and_resolve_its_incident(make_env: Callable[..., Env], digits: Dataset) -> None:
    env = make_env(monitors=True)
    c, admin = env.client, env.h(env.admin)
    key_id = env.gateway.keys.authenticate(env.scores).key_id
    pinned = c.put(f"/v1/admin/threat/{key_id}", json={"level": "under_attack", "reason": "drill"}, headers=admin)
    assert pinned.status_code == 200 and pinned.json()["level"] == "under_attack"
    r = c.post("/v1/models/digits/predict", json={"inputs": digits.x_test[:1].tolist()}, headers=env.h(env.scores))
    assert r.json()["release"] == "labels"
    assert c.get("/v1/admin/threat", headers=admin).json()["keys"][key_id]["pinned"] is True
    assert c.put(f"/v1/admin/threat/{key_id}", json={"level": None}, headers=admin).json()["level"] == "normal"
    r = c.post("/v1/models/digits/predict", json={"inputs": digits.x_test[:1].tolist()}, headers=env.h(env.scores))
    assert r.json()["release"] == "scores"
    changes = env.gateway.store.list_level_changes(key_id)
    assert [(ch.new, ch.actor != "policy") for ch in changes] == [("under_attack", True), ("normal", True)]
    assert c.put(f"/v1/admin/threat/{key_id}", json={"level": "severe"}, headers=admin).status_code == 422
    assert c.put("/v1/admin/threat/nokey", json={"level": None}, headers=admin).status_code == 404


def test_quarantine_policy_refuses_the_key(make_env: Callable[..., Env], digits: Dataset) -> None:
    env = make_env(levels={"under_attack": {"postprocess": ["label_only"], "rate_factor": 0.1, "quarantine": True}})
    key_id = env.gateway.keys.authenticate(env.scores).key_id
    env.client.put(f"/v1/admin/threat/{key_id}", json={"level": "under_attack"}, headers=env.h(env.admin))
    r = env.client.post(
        "/v1/models/digits/predict", json={"inputs": digits.x_test[:1].tolist()}, headers=env.h(env.scores)
    )
    assert r.status_code == 403 and r.json()["error"]["code"] == "quarantined"


def test_elevated_policy_rounds_scores(make_env: Callable[..., Env], digits: Dataset) -> None:
    env = make_env(levels={"elevated": {"postprocess": [{"name": "round", "decimals": 1}]}})
    key_id = env.gateway.keys.authenticate(env.scores).key_id
    env.client.put(f"/v1/admin/threat/{key_id}", json={"level": "elevated"}, headers=env.h(env.admin))
    r = env.client.post(
        "/v1/models/digits/predict", json={"inputs": digits.x_test[:4].tolist()}, headers=env.h(env.scores)
    )
    scores = torch.tensor(r.json()["scores"])
    assert torch.equal(scores, scores.round(decimals=1)) and r.json()["threat_level"] == "elevated"


def test_incidents_are_acknowledged_and_resolved_through_the_api(make_env: Callable[..., Env]) -> None:
    from bastion.monitors.base import Alert, Severity

    env = make_env()
    alert = Alert("probing", "probing", "k1", Severity.CRITICAL, "test", 1.0, "AML.T0043", 0.0, {})
    first = env.gateway.incidents.record_alert(alert)
    again = env.gateway.incidents.record_alert(alert)
    assert again.incident_id == first.incident_id and again.alert_count == 2
    c, h = env.client, env.h(env.admin)
    iid = first.incident_id
    assert (
        c.post(f"/v1/admin/incidents/{iid}", json={"status": "acknowledged"}, headers=h).json()["status"]
        == "acknowledged"
    )
    assert (
        c.post(f"/v1/admin/incidents/{iid}", json={"status": "resolved", "note": "key revoked"}, headers=h).status_code
        == 200
    )
    assert c.post(f"/v1/admin/incidents/{iid}", json={"status": "resolved"}, headers=h).status_code == 409
    assert c.post(f"/v1/admin/incidents/{iid}", json={"status": "closed"}, headers=h).status_code == 422
    assert c.post("/v1/admin/incidents/999", json={"status": "resolved"}, headers=h).status_code == 404
    # a new alert after resolution opens a new incident
    assert env.gateway.incidents.record_alert(alert).incident_id != iid
    assert [i["status"] for i in c.get("/v1/admin/incidents", headers=h).json()["incidents"]] == ["resolved", "open"]


def test_the_service_level_tightens_new_keys_not_established_ones(
    make_env: Callable[..., Env], digits: Dataset
) -> None:
    env = make_env(threat={"service_elevated_keys": 1, "service_under_attack_keys": 3})
    gw, admin = env.gateway, env.h(env.admin)
    body = {"inputs": digits.x_test[:1].tolist()}
    before = env.client.post("/v1/models/digits/predict", json=body, headers=env.h(env.scores)).json()
    sybils = [gw.keys.create(f"s{i}", ["predict:scores"]) for i in range(3)]
    for record, _ in sybils:
        env.client.put(f"/v1/admin/threat/{record.key_id}", json={"level": "under_attack"}, headers=admin)
    assert env.client.get("/v1/admin/threat", headers=admin).json()["service_level"] == "under_attack"
    r = env.client.post("/v1/models/digits/predict", json=body, headers=env.h(env.scores)).json()
    assert r["threat_level"] == "normal" and r["scores"] == before["scores"]  # three attackers change nothing here
    _, fresh = gw.keys.create("arrived-during-the-attack", ["predict:scores"])
    r = env.client.post("/v1/models/digits/predict", json=body, headers=env.h(fresh)).json()
    assert r["threat_level"] == "under_attack" and r["release"] == "labels"  # new keys get the service's level
    for record, _ in sybils:  # revoking the attackers drops their state: the service level falls back
        assert env.client.delete(f"/v1/admin/keys/{record.key_id}", headers=admin).status_code == 200
    assert env.client.get("/v1/admin/threat", headers=admin).json()["service_level"] == "normal"
    r = env.client.post("/v1/models/digits/predict", json=body, headers=env.h(fresh)).json()
    assert r["threat_level"] == "normal"


def test_an_incident_keeps_the_alert_that_opened_it_and_the_latest_ones(env: Env) -> None:
    from bastion.monitors import Alert, Severity

    for i in range(25):
        rec = env.gateway.incidents.record_alert(
            Alert("m", "probing", "k1", Severity.WARNING, f"alert {i}", 1.0, "AML.T0043", float(i), {"queries": i})
        )
    assert rec.alert_count == 25 and len(rec.evidence) == 20
    assert rec.evidence[0]["evidence"]["queries"] == 0  # what opened the case
    assert [e["evidence"]["queries"] for e in rec.evidence[1:]] == list(range(6, 25))
