"""Monitors re-arm after a reset or decay; assessment (red-team) keys are recorded but move no threat level."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from tests.gateway.conftest import Env

from bastion.cli.main import main
from bastion.data import Dataset
from bastion.gateway.server import serve_in_background
from bastion.monitors.threat import ThreatLevel


def _probe(env: Env, key: str, digits: Dataset, n: int = 40, seed: int = 0) -> dict[str, object]:
    """Near-duplicate queries of one image, as a score-based attack sends them."""
    g = torch.Generator().manual_seed(seed)
    x = digits.x_test[7:8]
    r: dict[str, object] = {}
    for _ in range(n):
        q = (x + 0.01 * torch.randn(x.shape, generator=g)).clamp(0, 1)
        r = env.client.post("/v1/models/digits/predict", json={"inputs": q.tolist()}, headers=env.h(key)).json()
    return r


def _alerts(env: Env, key_id: str) -> int:
    incidents = env.client.get("/v1/admin/incidents", headers=env.h(env.admin)).json()["incidents"]
    return sum(len(i["evidence"]) for i in incidents if i["key_id"] == key_id and i["kind"] == "probing")


def test_probing_is_caught_again_after_a_reset(make_env: Callable[..., Env], digits: Dataset) -> None:
    env = make_env(monitors=True)
    key_id = env.gateway.keys.authenticate(env.scores).key_id
    assert _probe(env, env.scores, digits)["threat_level"] == "under_attack"
    assert _alerts(env, key_id) == 1
    env.client.put(f"/v1/admin/threat/{key_id}", json={"level": None}, headers=env.h(env.admin))
    assert _probe(env, env.scores, digits, n=1, seed=1)["threat_level"] == "normal"
    assert _probe(env, env.scores, digits, seed=2)["threat_level"] == "under_attack"  # re-armed: flagged again
    assert _alerts(env, key_id) == 2


def test_probing_is_caught_again_after_the_level_decays(make_env: Callable[..., Env], digits: Dataset) -> None:
    env = make_env(monitors=True, threat={"quiet_period_s": 60})
    now = [1_000_000.0]
    env.gateway.clock = lambda: now[0]
    key_id = env.gateway.keys.authenticate(env.scores).key_id
    assert _probe(env, env.scores, digits)["threat_level"] == "under_attack"
    now[0] += 10_000  # long quiet: under attack -> elevated -> normal
    assert _probe(env, env.scores, digits, n=1, seed=1)["threat_level"] == "normal"
    assert _probe(env, env.scores, digits, seed=2)["threat_level"] == "under_attack"
    assert _alerts(env, key_id) == 2


def test_an_assessment_key_is_recorded_but_moves_no_level(make_env: Callable[..., Env], digits: Dataset) -> None:
    env = make_env(monitors=True)
    record, red = env.gateway.keys.create("red-team", ["predict:scores", "assessment"])
    r = _probe(env, red, digits)
    assert r["threat_level"] == "normal" and r["release"] == "scores"
    status = env.client.get("/v1/admin/threat", headers=env.h(env.admin)).json()
    assert status["service_level"] == "normal" and status["keys"] == {}
    incidents = env.client.get("/v1/admin/incidents", headers=env.h(env.admin)).json()["incidents"]
    mine = [i for i in incidents if i["key_id"] == record.key_id]
    assert mine and mine[0]["evidence"][0]["evidence"]["assessment_key"] is True  # recorded, marked


def test_assess_url_with_an_assessment_key_completes_with_full_scores(
    make_env: Callable[..., Env], digits: Dataset, tmp_path: Path
) -> None:
    env = make_env(monitors=True, rate={"requests_per_second": 20, "inputs_per_minute": 600, "inputs_per_day": 10_000})
    _, red = env.gateway.keys.create("red-team", ["predict:scores", "assessment"])
    policy = tmp_path / "p.yaml"
    policy.write_text(
        "samples: 10\nattacks:\n  - {id: square-linf, attack: square, eps: [0.1], params: {max_queries: 200}}\n"
        "thresholds:\n  - {probe: square-linf, eps: 0.1, metric: robust_accuracy, min: 0.0}\n"
    )
    with serve_in_background(env.gateway) as url:
        code = main(
            ["assess", "--url", f"{url}/v1/models/digits/predict", "--api-key", red, "--data", "digits",
             "--policy", str(policy), "--out", str(tmp_path / "r")]
        )  # fmt: skip
    assert code == 0  # a normal key would be flagged, throttled to 60 inputs/minute and cut short
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    assert results["gate"]["status"] == "pass" and all(r["complete"] for r in results["rows"])
    assert env.gateway.threat.service_level.label == "normal"


def test_assess_url_is_inconclusive_when_the_gateway_rounds_this_clients_scores(
    make_env: Callable[..., Env], tmp_path: Path
) -> None:
    """Scores rounded at "elevated" still look like scores; the gateway's threat_level field gives it away."""
    env = make_env()
    key_id = env.gateway.keys.authenticate(env.scores).key_id
    env.gateway.set_level(key_id, env.gateway.threat.level(key_id).__class__.ELEVATED, "test", "drill")
    policy = tmp_path / "p.yaml"
    policy.write_text(
        "samples: 10\nattacks:\n  - {id: square-linf, attack: square, eps: [0.1], params: {max_queries: 50}}\n"
        "thresholds:\n  - {probe: square-linf, eps: 0.1, metric: robust_accuracy, min: 0.0}\n"
    )
    with serve_in_background(env.gateway) as url:
        code = main(
            ["assess", "--url", f"{url}/v1/models/digits/predict", "--api-key", env.scores, "--data", "digits",
             "--policy", str(policy), "--out", str(tmp_path / "r")]
        )  # fmt: skip
    assert code == 3
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    assert results["gate"]["status"] == "inconclusive" and "threat level elevated" in results["rows"][0]["note"]


def test_a_key_revoked_outside_the_server_stops_counting_towards_the_service_level(
    make_env: Callable[..., Env], digits: Dataset
) -> None:
    env = make_env(threat={"service_elevated_keys": 1, "service_under_attack_keys": 1})
    gw = env.gateway
    key_id = gw.keys.authenticate(env.labels).key_id
    gw.set_level(key_id, ThreatLevel.UNDER_ATTACK, "ops", "drill")
    assert gw.threat.service_level is ThreatLevel.UNDER_ATTACK
    gw.store.revoke_key(key_id, gw.clock())  # what `bastion keys revoke` does, through its own connection
    now = gw.clock()
    gw.clock = lambda: now + gw.REVOKED_SWEEP_S + 1  # type: ignore[method-assign]
    ok = env.client.post(
        "/v1/models/digits/predict", json={"inputs": digits.x_test[:1].tolist()}, headers=env.h(env.scores)
    )
    assert ok.status_code == 200
    assert gw.threat.service_level is ThreatLevel.NORMAL and key_id not in gw.threat.snapshot()
