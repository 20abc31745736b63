"""Threat intelligence end to end: a gateway's STIX export of a real attack, imported by a second gateway, stops the
attack's inputs on first sight there; hostile bundles are refused whole and change nothing."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import stix2
import torch
from tests.gateway.conftest import Env, running

from bastion import HttpClassifier, Norm, ThreatModel
from bastion.atlas import TECHNIQUES
from bastion.attacks import Square
from bastion.data import Dataset
from bastion.errors import InputValidationError
from bastion.gateway.intel import export_bundle, import_bundle, parse_bundle
from bastion.monitors.fingerprint import FingerprintScheme


@pytest.fixture(scope="module")
def attack_seen(digits_model_file: Path, digits: Dataset, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Gateway A, attacked by Square through HTTP (probing gets the key flagged): its export, what the attacker
    found, and every key id and secret A handed out."""
    from tests.gateway.conftest import make_config

    from bastion.gateway import Gateway

    tmp = tmp_path_factory.mktemp("gateway-a")
    gw = Gateway.from_config(make_config(digits_model_file, tmp), monitors=True)
    try:
        secrets = [gw.keys.create(name, ["predict:scores"]) for name in ("attacker", "app")]
        spec = gw.models["digits"].spec
        x, y = digits.x_test[:4], digits.y_test[:4]
        with running(gw) as url:
            remote = HttpClassifier(f"{url}/v1/models/digits/predict", spec, api_key=secrets[0][1], max_batch=64)
            result = Square(ThreatModel(Norm.LINF, 0.1), max_queries=80).run(
                remote, x, y, generator=torch.Generator().manual_seed(0)
            )
        incidents = gw.store.list_incidents()
        text, summary = export_bundle(gw.store, since=time.time() - 3600, until=time.time() + 1, identity="Team A")
    finally:
        gw.close()
    return {
        "text": text,
        "summary": summary,
        "incidents": incidents,
        "x_adv": result.x_adv,
        "x": x,
        "key_ids": [r.key_id for r, _ in secrets],
        "secrets": [s for _, s in secrets],
    }


def test_the_export_is_valid_stix_with_real_atlas_techniques_and_no_keys_or_inputs(attack_seen: dict[str, Any]) -> None:
    text = attack_seen["text"]
    bundle = stix2.parse(text, allow_custom=True)
    kinds = [o.type for o in bundle.objects]
    assert {"identity", "attack-pattern", "indicator", "relationship", "sighting", "report"} <= set(kinds)
    techniques = [
        ref["external_id"]
        for o in bundle.objects
        if o.type == "attack-pattern"
        for ref in o.external_references
        if ref["source_name"] == "mitre-atlas"
    ]
    assert techniques and all(t in TECHNIQUES for t in techniques)
    assert "AML.T0043" in techniques  # the probing alert names Craft Adversarial Data
    fingerprints = [o for o in bundle.objects if o.type == "indicator" and o.pattern_type == "bastion-simhash-1"]
    assert fingerprints and all(
        FingerprintScheme.from_dict(o.x_bastion_scheme).shape == (1, 8, 8) for o in fingerprints
    )
    sightings = [o for o in bundle.objects if o.type == "sighting"]
    assert sum(s.count for s in sightings) >= len(fingerprints)
    # never a key id, a key secret, or an input: no list of the input's 64 numbers anywhere
    for secret in attack_seen["key_ids"] + attack_seen["secrets"]:
        assert secret not in text
    assert "127.0.0.1" not in text  # clients are not shared unless asked

    def lists(v: Any) -> list[list[Any]]:
        if isinstance(v, dict):
            return [x for w in v.values() for x in lists(w)]
        if isinstance(v, list):
            return [v] + [x for w in v for x in lists(w)]
        return []

    assert max(len(v) for v in lists(json.loads(text))) < 64


def test_an_attack_seen_by_one_gateway_is_stopped_on_first_sight_by_another(
    make_env: Callable[..., Env], attack_seen: dict[str, Any], digits: Dataset
) -> None:
    b = make_env(monitors=True, intel={"refresh_s": 0.2})
    b.gateway.intel_watch.start()  # as Gateway.from_config does
    summary = import_bundle(b.gateway.store, attack_seen["text"].encode())
    assert summary["input_indicators"] >= 1 and summary["source"] == "Team A"
    deadline = time.monotonic() + 10
    while b.gateway.intel_status()["models"]["digits"]["active"] == 0 and time.monotonic() < deadline:
        time.sleep(0.1)  # the running gateway picks the import up from its store
    assert b.gateway.intel_status()["models"]["digits"]["active"] >= 1
    _, attacker = b.gateway.keys.create("attacker-at-b", ["predict:scores"])
    key_id = b.gateway.keys.authenticate(attacker).key_id
    g = torch.Generator().manual_seed(5)
    # the attacker brings what it found at A, with fresh noise (sigma 0.02) so no byte matches
    replay = (attack_seen["x_adv"][:1] + 0.02 * torch.randn((1, 1, 8, 8), generator=g)).clamp(0, 1)
    with running(b.gateway) as url, httpx.Client(base_url=url, timeout=30) as client:
        r = client.post("/v1/models/digits/predict", json={"inputs": replay.tolist()}, headers=b.h(attacker))
        assert r.status_code == 422 and "known hostile inputs" in r.json()["error"]["message"]
        level = client.get("/v1/admin/threat", headers=b.h(b.admin)).json()
        assert level["keys"][key_id]["level"] == "under_attack"
        incidents = client.get("/v1/admin/incidents", headers=b.h(b.admin)).json()["incidents"]
        (inc,) = [i for i in incidents if i["kind"] == "known_inputs"]
        assert inc["key_id"] == key_id and inc["severity"] == "critical"
        assert "Team A" in inc["evidence"][0]["message"]
        # benign traffic at B: 300 test digits other than the attacked ones, none matches
        for start in range(10, 310, 50):
            ok = client.post(
                "/v1/models/digits/predict",
                json={"inputs": digits.x_test[start : start + 50].tolist()},
                headers=b.h(b.scores),
            )
            assert ok.status_code == 200, ok.text
    assert not [i for i in b.gateway.store.list_incidents() if i.key_id != key_id]


def _bundle(*objects: dict[str, Any]) -> bytes:
    return json.dumps(
        {"type": "bundle", "id": "bundle--6b4bcd8a-1b9f-4c43-8b0e-a4b6e3fa2c6e", "objects": list(objects)}
    ).encode()


def _indicator(**fields: Any) -> dict[str, Any]:
    base = {
        "type": "indicator",
        "spec_version": "2.1",
        "id": "indicator--0f5b5b5e-8a1c-4c1d-9a53-6f1c7c1b2a10",
        "created": "2026-12-01T00:00:00.000Z",
        "modified": "2026-12-01T00:00:00.000Z",
        "pattern_type": "stix",
        "pattern": "[ipv4-addr:value = '127.0.0.1']",
        "valid_from": "2026-12-01T00:00:00Z",
    }
    return {**base, **fields}


GOOD_SCHEME = {"scheme": "bastion-simhash-1", "shape": [1, 8, 8], "bits": 256, "margin": 1, "grid": 16}
HOSTILE = {
    "not JSON": (b"{not json", "not JSON"),
    "deeply nested": (b"[" * 5000 + b"]" * 5000, "nested too deeply"),
    "not a bundle": (json.dumps({"type": "indicator"}).encode(), "not a STIX bundle"),
    "unknown object": (_bundle({"type": "x-evil", "spec_version": "2.1", "id": "x-evil--1"}), "does not import"),
    "malware object": (_bundle({"type": "malware", "spec_version": "2.1", "id": "malware--1"}), "does not import"),
    "STIX 2.0": (_bundle(_indicator(spec_version="2.0")), "not STIX 2.1"),
    "wrong type": (_bundle(_indicator(valid_from=5)), "not a valid STIX 2.1 bundle"),
    "bad pattern": (_bundle(_indicator(pattern="[ipv4-addr:value = ")), "not a valid STIX 2.1 bundle"),
    "bad fingerprint": (
        _bundle(_indicator(pattern_type="bastion-simhash-1", pattern="zz" * 32, x_bastion_scheme=GOOD_SCHEME)),
        "hex",
    ),
    "bad scheme": (
        _bundle(
            _indicator(pattern_type="bastion-simhash-1", pattern="ab" * 32, x_bastion_scheme={**GOOD_SCHEME, "bits": 7})
        ),
        "bits must be one of",
    ),
    "huge radius": (
        _bundle(
            _indicator(
                pattern_type="bastion-simhash-1", pattern="ab" * 32, x_bastion_scheme=GOOD_SCHEME, x_bastion_radius=200
            )
        ),
        "x_bastion_radius",
    ),
    "whole internet": (_bundle(_indicator(pattern="[ipv4-addr:value = '0.0.0.0/0']")), "at most 65,536"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_bundles_are_refused_whole_and_change_nothing(make_env: Callable[..., Env], case: str) -> None:
    env = make_env()
    good = _indicator(id="indicator--1d6c1f63-3d51-4a9f-8d8e-2f1b7b1c9a01")
    data, message = HOSTILE[case]
    if case not in ("not JSON", "deeply nested", "not a bundle"):  # a good indicator in the same bundle is not kept
        doc = json.loads(data)
        doc["objects"].insert(0, good)
        data = json.dumps(doc).encode()
    before = env.gateway.store.intel_revision()
    with pytest.raises(InputValidationError, match=message):
        import_bundle(env.gateway.store, data)
    assert env.gateway.store.intel_revision() == before == (0, 0)


def test_an_oversize_bundle_is_refused_before_it_is_parsed() -> None:
    with pytest.raises(InputValidationError, match="over the 1,000-byte limit"):
        parse_bundle(_bundle(_indicator()) + b" " * 1000, max_bytes=1000)


def test_a_listed_client_is_alerted_at_once_and_refused_where_configured(
    make_env: Callable[..., Env], digits: Dataset
) -> None:
    env = make_env(monitors=False, intel={"reject_clients": True})
    summary = import_bundle(env.gateway.store, _bundle(_indicator()))
    assert summary["client_indicators"] == 1
    env.gateway.intel_watch.refresh()
    with running(env.gateway) as url, httpx.Client(base_url=url, timeout=30) as client:
        r = client.post(
            "/v1/models/digits/predict", json={"inputs": digits.x_test[:1].tolist()}, headers=env.h(env.scores)
        )
        assert r.status_code == 403 and "listed as hostile" in r.json()["error"]["message"]
    (inc,) = env.gateway.store.list_incidents()
    assert inc.kind == "known_client" and inc.severity == "critical" and inc.atlas == "AML.T0040"


def test_expired_revoked_and_foreign_indicators_are_skipped_not_refused(make_env: Callable[..., Env]) -> None:
    env = make_env()
    data = _bundle(
        _indicator(id="indicator--1d6c1f63-3d51-4a9f-8d8e-2f1b7b1c9a02", valid_until="2026-12-01T00:00:01Z"),
        _indicator(id="indicator--1d6c1f63-3d51-4a9f-8d8e-2f1b7b1c9a03", revoked=True),
        _indicator(
            id="indicator--1d6c1f63-3d51-4a9f-8d8e-2f1b7b1c9a04",
            pattern="[file:hashes.'SHA-256' = '" + "ab" * 32 + "']",
        ),
    )
    summary = import_bundle(env.gateway.store, data)
    assert summary["skipped"] == {"expired": 1, "revoked": 1, "not applicable": 1}
    assert env.gateway.store.intel_revision() == (0, 0)


def test_client_addresses_are_shared_only_as_the_policy_allows(make_env: Callable[..., Env]) -> None:
    from bastion.gateway.store.base import AuditEvent
    from bastion.monitors.base import Alert, Severity

    env = make_env()
    now = time.time()
    env.gateway.incidents.record_alert(
        Alert("probing", "probing", "k_attacker", Severity.CRITICAL, "near-duplicates", 1.0, "AML.T0043", now)
    )
    for client in ("8.8.8.8", "10.0.0.5", "not-an-address"):
        env.gateway.store.append(
            AuditEvent(now, f"r-{client}", "k_attacker", "digits", None, 1, "answered", 200, 1.0, client=client)
        )

    def addresses(policy: str) -> list[str]:
        text, _ = export_bundle(env.gateway.store, since=now - 60, until=now + 60, clients=policy)  # type: ignore[arg-type]
        objs = stix2.parse(text, allow_custom=True).objects
        assert "k_attacker" not in text
        return sorted(o.pattern for o in objs if o.type == "indicator" and o.pattern_type == "stix")

    assert addresses("none") == []
    assert addresses("public") == ["[ipv4-addr:value = '8.8.8.8']"]
    assert addresses("all") == ["[ipv4-addr:value = '10.0.0.5']", "[ipv4-addr:value = '8.8.8.8']"]
    with pytest.raises(InputValidationError, match="empty"):
        export_bundle(env.gateway.store, since=now, until=now - 1)
