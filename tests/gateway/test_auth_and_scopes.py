"""API keys: shown once, stored as a keyed hash, scoped, revocable with immediate effect (even from another process)."""

from __future__ import annotations

import sqlite3

import pytest
from tests.gateway.conftest import Env

from bastion.gateway.auth import AuthError, KeyManager, Scope
from bastion.gateway.store import SqlStore

GOOD = {"inputs": [[[[0.5] * 8] * 8]]}


def test_keys_are_random_and_only_a_keyed_hash_is_stored(env: Env) -> None:
    rec, key = env.gateway.keys.create("svc", ["predict:scores"])
    _, key2 = env.gateway.keys.create("svc", ["predict:scores"])
    assert key != key2 and key.startswith(f"bk_{rec.key_id}_")
    secret_part = key.split("_", 2)[2]
    db = sqlite3.connect(env.gateway.config.database)
    dump = "\n".join(db.iterdump())
    assert secret_part not in dump and rec.secret_hash in dump
    # the hash is keyed: another server secret cannot verify the key
    other = KeyManager(env.gateway.store, b"x" * 64)
    with pytest.raises(AuthError, match="invalid"):
        other.authenticate(key)
    assert env.gateway.keys.authenticate(key).key_id == rec.key_id


def test_label_scope_gets_labels_only_and_score_scope_gets_scores(env: Env) -> None:
    c = env.client
    labels = c.post("/v1/models/digits/predict", json=GOOD, headers=env.h(env.labels)).json()
    scores = c.post("/v1/models/digits/predict", json=GOOD, headers=env.h(env.scores)).json()
    assert labels["release"] == "labels" and "scores" not in labels
    assert scores["release"] == "scores" and len(scores["scores"][0]) == 10
    assert labels["labels"] == scores["labels"]
    admin = c.post("/v1/models/digits/predict", json=GOOD, headers=env.h(env.admin)).json()
    assert admin["release"] == "scores"  # admin implies the predict scopes


def test_revocation_from_another_connection_takes_effect_on_the_next_request(env: Env) -> None:
    rec, key = env.gateway.keys.create("temp", ["predict:scores"])
    c = env.client
    assert c.post("/v1/models/digits/predict", json=GOOD, headers=env.h(key)).status_code == 200
    other = SqlStore(env.gateway.config.database)  # what `bastion keys revoke` does from its own process
    try:
        assert other.revoke_key(rec.key_id, 0.0)
    finally:
        other.close()
    r = c.post("/v1/models/digits/predict", json=GOOD, headers=env.h(key))
    assert r.status_code == 401 and r.json()["error"]["code"] == "revoked_key"


def test_admin_api_creates_lists_and_revokes_keys(env: Env) -> None:
    c, h = env.client, env.h(env.admin)
    made = c.post("/v1/admin/keys", json={"name": "new", "scopes": ["predict:labels"]}, headers=h)
    assert made.status_code == 201
    key, key_id = made.json()["key"], made.json()["key_id"]
    listed = c.get("/v1/admin/keys", headers=h).json()["keys"]
    assert key_id in [k["key_id"] for k in listed] and all("key" not in k for k in listed)
    assert c.post("/v1/models/digits/predict", json=GOOD, headers=env.h(key)).status_code == 200
    assert c.delete(f"/v1/admin/keys/{key_id}", headers=h).status_code == 200
    assert c.post("/v1/models/digits/predict", json=GOOD, headers=env.h(key)).status_code == 401
    assert c.delete(f"/v1/admin/keys/{key_id}", headers=h).status_code == 404


def test_principal_scopes() -> None:
    from bastion.gateway.auth import Principal

    p = Principal("a", "n", ("predict:labels",))
    assert p.allows(Scope.PREDICT_LABELS) and not p.allows(Scope.PREDICT_SCORES) and not p.allows(Scope.ADMIN)
    assert Principal("a", "n", ("admin",)).allows(Scope.PREDICT_SCORES)
