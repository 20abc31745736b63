"""With a registry configured, the gateway serves only artifacts that verify: at start and on every reload."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from tests.registry.test_registry_versions import perturbed

from bastion.data import Dataset
from bastion.errors import ConfigError, IntegrityError
from bastion.gateway import Gateway, create_app, parse_config
from bastion.registry import Registry, SigningKey, generate_keypair
from bastion.registry.manifest import MANIFEST_FILE


@pytest.fixture()
def reg(tmp_path: Path, digits_model_file: Path) -> dict[str, Any]:
    generate_keypair(tmp_path / "k" / "signer.key", tmp_path / "k" / "signer.pub")
    generate_keypair(tmp_path / "k" / "rogue.key", tmp_path / "k" / "rogue.pub")
    with Registry.init(tmp_path / "registry") as r:
        r.add_dataset("digits", sign_with=SigningKey(tmp_path / "k" / "signer.key"))
        row = r.add_model(digits_model_file, sign_with=SigningKey(tmp_path / "k" / "signer.key"))
    return {"root": tmp_path / "registry", "model": row, "key": tmp_path / "k" / "signer.key", "tmp": tmp_path}


def _config(reg: dict[str, Any], **extra: Any) -> Any:
    tmp = reg["tmp"]
    return parse_config(
        {
            "models": {"digits": {"artifacts": [reg["model"].name]}},
            "registry": {"path": "registry", "trust": ["k/signer.pub"]},
            "database": "gw.db",
            "rate": {"requests_per_second": 1000, "inputs_per_minute": 1_000_000, "inputs_per_day": 10_000_000},
            **extra,
        },
        base=tmp,
    )


def _events(tmp: Path) -> list[dict[str, Any]]:
    eng = sa.create_engine(f"sqlite:///{tmp / 'gw.db'}")
    with eng.connect() as c:
        rows = c.execute(sa.text("select decision, status, output from audit_events order by event_id")).all()
    eng.dispose()
    return [{"decision": d, "status": s, "output": json.loads(o)} for d, s, o in rows]


def _weights(reg: dict[str, Any]) -> Path:
    return next((reg["root"] / "artifacts" / reg["model"].id).glob("*.safetensors"))


def test_a_verified_artifact_is_served(reg: dict[str, Any], digits: Dataset) -> None:
    gw = Gateway.from_config(_config(reg), monitors=False)
    try:
        _, key = gw.keys.create("app", ["predict:labels"])
        r = TestClient(create_app(gw)).post(
            "/v1/models/digits/predict",
            json={"inputs": digits.x_test[:16].tolist()},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert r.status_code == 200, r.text
        assert gw.sources["digits"][0].artifact == reg["model"].id and gw.sources["digits"][0].signer
    finally:
        gw.close()


@pytest.mark.parametrize("tamper", ["byte", "rogue-signature", "lineage"])
def test_a_tampered_artifact_is_refused_at_start_with_the_reason_logged_and_audited(
    reg: dict[str, Any], tamper: str, caplog: pytest.LogCaptureFixture
) -> None:
    if tamper == "byte":
        w = _weights(reg)
        raw = bytearray(w.read_bytes())
        raw[-1] ^= 0x10
        w.write_bytes(bytes(raw))
        reason = "changed"
    elif tamper == "rogue-signature":
        from bastion.registry.signing import sign

        sign(
            reg["root"] / "artifacts" / reg["model"].id,
            reg["root"] / "signatures" / f"{reg['model'].id}.sig",
            SigningKey(reg["tmp"] / "k" / "rogue.key"),
        )
        reason = "unknown key"
    else:
        mf = reg["root"] / "artifacts" / reg["model"].id / MANIFEST_FILE
        d = json.loads(mf.read_bytes())
        d["dataset_digest"] = "0" * 64
        mf.write_bytes(json.dumps(d, sort_keys=True, separators=(",", ":")).encode())
        reason = "not in the registry"
    with pytest.raises(IntegrityError, match="failed verification") as e:
        Gateway.from_config(_config(reg), monitors=False)
    assert any(reason in p for p in e.value.problems)
    assert any("refusing to start" in r.message and reason in r.message for r in caplog.records)
    events = _events(reg["tmp"])
    assert events[-1]["decision"] == "refused:model_refused" and events[-1]["output"]["when"] == "start"
    assert any(reason in p for p in events[-1]["output"]["problems"])


def test_a_model_file_replaced_on_disk_is_refused_on_reload_and_the_verified_one_keeps_serving(
    reg: dict[str, Any], digits: Dataset, digits_model_file: Path
) -> None:
    gw = Gateway.from_config(_config(reg), monitors=False)
    try:
        _, admin = gw.keys.create("ops", ["admin"])
        _, key = gw.keys.create("app", ["predict:scores"])
        client = TestClient(create_app(gw))
        x = {"inputs": digits.x_test[:8].tolist()}
        before = client.post("/v1/models/digits/predict", json=x, headers={"Authorization": f"Bearer {key}"}).json()
        same = client.post("/v1/admin/models/digits/reload", headers={"Authorization": f"Bearer {admin}"})
        assert same.status_code == 200 and same.json()["changed"] is False
        # an attacker with write access to the model store swaps in other weights
        other = perturbed(digits_model_file, reg["tmp"] / "other.safetensors")
        _weights(reg).write_bytes(other.read_bytes())
        r = client.post("/v1/admin/models/digits/reload", headers={"Authorization": f"Bearer {admin}"})
        assert r.status_code == 409, r.text
        body = r.json()["error"]
        assert body["code"] == "model_refused" and "changed" in body["message"] and "keeps serving" in body["message"]
        after = client.post("/v1/models/digits/predict", json=x, headers={"Authorization": f"Bearer {key}"}).json()
        assert after["scores"] == before["scores"]  # still the verified model
        incidents = client.get("/v1/admin/incidents", headers={"Authorization": f"Bearer {admin}"}).json()["incidents"]
        assert [(i["kind"], i["atlas"]) for i in incidents] == [("artifact_verification", "AML.T0010")]
        refused = [e for e in _events(reg["tmp"]) if e["decision"] == "refused:model_refused"]
        assert refused and any("changed" in p for p in refused[-1]["output"]["problems"])
    finally:
        gw.close()


def test_reload_picks_up_a_newer_signed_version(reg: dict[str, Any], digits: Dataset, digits_model_file: Path) -> None:
    gw = Gateway.from_config(_config(reg), monitors=False)
    try:
        _, admin = gw.keys.create("ops", ["admin"])
        with Registry.open(reg["root"]) as r:
            v2 = r.add_model(
                perturbed(digits_model_file, reg["tmp"] / "digits.safetensors"), sign_with=SigningKey(reg["key"])
            )
        client = TestClient(create_app(gw))
        r2 = client.post("/v1/admin/models/digits/reload", headers={"Authorization": f"Bearer {admin}"})
        assert r2.status_code == 200, r2.text
        assert r2.json()["changed"] is True and r2.json()["sources"][0]["version"] == 2
        assert gw.sources["digits"][0].artifact == v2.id
        audit = [e for e in _events(reg["tmp"]) if e["decision"] == "admin:reload_model"]
        assert audit[-1]["output"]["sources"][0]["artifact"] == v2.id
    finally:
        gw.close()


def test_the_configuration_keeps_files_and_artifacts_apart(reg: dict[str, Any], digits_model_file: Path) -> None:
    with pytest.raises(ConfigError, match="serves only verified registry artifacts"):
        _config(reg, models={"digits": {"paths": [str(digits_model_file)]}})
    with pytest.raises(ConfigError, match="configure registry"):
        parse_config({"models": {"d": {"artifacts": ["x"]}}}, base=reg["tmp"])
    with pytest.raises(ConfigError, match="either paths"):
        parse_config({"models": {"d": {"artifacts": ["x"], "paths": ["y"]}}}, base=reg["tmp"])


def test_a_rollback_to_an_older_signed_version_is_refused_on_reload(
    reg: dict[str, Any], digits_model_file: Path
) -> None:
    """An attacker who can edit the registry's index deletes the newest version, so NAME resolves to an older (still
    validly signed) one: every signature checks out, but the running gateway refuses to go backwards."""
    gw = Gateway.from_config(_config(reg), monitors=False)
    try:
        _, admin = gw.keys.create("ops", ["admin"])
        with Registry.open(reg["root"]) as r:
            v2 = r.add_model(
                perturbed(digits_model_file, reg["tmp"] / "digits.safetensors"), sign_with=SigningKey(reg["key"])
            )
        client = TestClient(create_app(gw))
        h = {"Authorization": f"Bearer {admin}"}
        assert client.post("/v1/admin/models/digits/reload", headers=h).json()["sources"][0]["version"] == 2
        eng = sa.create_engine(f"sqlite:///{reg['root'] / 'index.db'}")
        with eng.begin() as c:
            c.execute(sa.text("delete from artifacts where id = :i"), {"i": v2.id})
        eng.dispose()
        r = client.post("/v1/admin/models/digits/reload", headers=h)
        assert r.status_code == 409 and "rollback" in r.json()["error"]["message"], r.text
        assert gw.sources["digits"][0].artifact == v2.id
    finally:
        gw.close()
