"""Encrypted prediction through a real gateway: a breast-cancer logistic regression answers ciphertexts over HTTP
with the plaintext's labels; scopes, threat levels, rate limits and size limits apply; the audit log records sizes
and timings, nothing decryptable."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
import torch

from bastion.data import load_dataset
from bastion.defenses.encrypted import EncryptedClient, linear_weights
from bastion.defenses.encrypted.remote import predict_remote
from bastion.defenses.encrypted.wire import pack_query
from bastion.errors import InputValidationError
from bastion.gateway import Gateway, parse_config
from bastion.gateway.server import serve_in_background


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, digits_model_file: Path):
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression

    tmp = tmp_path_factory.mktemp("encrypted-gw")
    data = load_dataset("breast-cancer")
    est = LogisticRegression(max_iter=2000).fit(data.x_train.numpy(), data.y_train.numpy())
    sio.dump(est, str(tmp / "cancer.skops"))
    cfg = parse_config(
        {
            "models": {
                "cancer": {"paths": [str(tmp / "cancer.skops")], "input_shape": [30], "serve_encrypted": True},
                "digits": {"paths": [str(digits_model_file)], "serve_encrypted": True},
                "plain": {"paths": [str(tmp / "cancer.skops")], "input_shape": [30]},
            },
            "database": str(tmp / "gw.db"),
            "rate": {"requests_per_second": 1000, "inputs_per_minute": 100_000, "inputs_per_day": 1_000_000},
            "limits": {"max_encrypted_bytes": 40_000_000},
        },
        base=tmp,
    )
    gw = Gateway.from_config(cfg, monitors=False)
    _, scores = gw.keys.create("app", ["predict:scores"])
    _, labels = gw.keys.create("partner", ["predict:labels"])
    _, other = gw.keys.create("other", ["predict:scores"])
    with serve_in_background(gw) as url:
        yield {
            "gw": gw,
            "url": url,
            "scores": scores,
            "labels": labels,
            "other": other,
            "data": data,
            "est": est,
            "db": tmp / "gw.db",
        }
    gw.close()


def test_breast_cancer_through_the_gateway_gives_the_plaintext_labels_in_both_packings(served) -> None:
    data, est = served["data"], served["est"]
    weights = linear_weights(est, (30,))
    client = EncryptedClient(30, 2, single_max=2)
    logits = predict_remote(client, served["url"], "cancer", served["scores"], data.x_test)
    assert torch.equal(logits.argmax(1), torch.from_numpy(est.predict(data.x_test.numpy())))
    assert float((logits - weights.plaintext(data.x_test)).abs().max()) < 1e-3
    two = predict_remote(client, served["url"], "cancer", served["scores"], data.x_test[:2])  # the single packing
    assert torch.equal(two.argmax(1), logits[:2].argmax(1))
    eng = sa.create_engine(f"sqlite:///{served['db']}")
    with eng.connect() as c:
        rows = c.execute(
            sa.text("select decision, n_inputs, output from audit_events where decision like 'encrypted%'")
        ).all()
    eng.dispose()
    events = [(d, n, json.loads(o)) for d, n, o in rows]
    assert {d for d, _, _ in events} == {"encrypted", "encrypted_context"}
    enc = [o["encrypted"] for d, _, o in events if d == "encrypted"]
    assert {e["regime"] for e in enc} == {"batch", "single"}
    assert all(e["bytes_in"] > 0 and e["bytes_out"] > 0 and e["server_ms"] >= 0 for e in enc)
    assert all("labels" not in o and "scores" not in o for _, _, o in events)  # nothing decryptable is kept
    assert sum(n for d, n, _ in events if d == "encrypted") == data.x_test.shape[0] + 2


def test_scopes_models_contexts_and_sizes_are_enforced(served) -> None:
    data = served["data"]
    client = EncryptedClient(30, 2, single_max=0)
    with pytest.raises(InputValidationError, match="403 forbidden: encrypted answers are the model's full logits"):
        predict_remote(client, served["url"], "cancer", served["labels"], data.x_test[:4])
    with pytest.raises(InputValidationError, match="422 not_convertible: model digits cannot be served encrypted"):
        predict_remote(EncryptedClient(64, 10), served["url"], "digits", served["scores"], torch.rand(4, 1, 8, 8))
    # the same linear model without serve_encrypted: no encrypted channel (it would be an unwatched one)
    with pytest.raises(InputValidationError, match="404 encrypted_off: model plain is not served encrypted"):
        predict_remote(client, served["url"], "plain", served["scores"], data.x_test[:4])
    # a context registered by one key cannot be used by another
    (q,) = client.encrypt(data.x_test[:4])
    h = {"Authorization": f"Bearer {served['scores']}"}
    r = httpx.post(f"{served['url']}/v1/models/cancer/encrypted-contexts", content=client.public_context(q), headers=h)
    assert r.status_code == 200 and r.json()["context_id"] == q.context_id
    r = httpx.post(
        f"{served['url']}/v1/models/cancer/predict-encrypted",
        content=pack_query(q),
        headers={"Authorization": f"Bearer {served['other']}"},
    )
    assert r.status_code == 422 and "was not registered by this key" in r.json()["error"]["message"]
    r = httpx.post(f"{served['url']}/v1/models/cancer/predict-encrypted", content=b"garbage", headers=h)
    assert r.status_code == 422 and "must start with" in r.json()["error"]["message"]
    r = httpx.post(
        f"{served['url']}/v1/models/cancer/predict-encrypted", content=b"x" * 40_000_001, headers=h, timeout=60
    )
    assert r.status_code == 413 and "max_encrypted_bytes" in r.json()["error"]["message"]
    r = httpx.post(f"{served['url']}/v1/models/cancer/predict-encrypted", content=pack_query(q))
    assert r.status_code == 401


def test_a_key_above_normal_threat_level_is_refused(served) -> None:
    from bastion.monitors.threat import ThreatLevel

    gw = served["gw"]
    principal = gw.keys.authenticate(served["other"])
    gw.set_level(principal.key_id, ThreatLevel.ELEVATED, "test", "drill")
    try:
        with pytest.raises(InputValidationError, match="degraded at threat level elevated"):
            predict_remote(
                EncryptedClient(30, 2, single_max=0),
                served["url"],
                "cancer",
                served["other"],
                served["data"].x_test[:4],
            )
    finally:
        gw.set_level(principal.key_id, None, "test", "drill over")


def test_a_converted_polynomial_mlp_is_served_encrypted(tmp_path: Path, digits) -> None:
    """`bastion encrypt-model`'s output named in the model entry: the gateway evaluates the MLP on ciphertexts, and
    refuses a conversion of another file."""
    from bastion.defenses.encrypted import PolyActivation, convert_mlp
    from bastion.defenses.encrypted.storage import save_converted

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 8), PolyActivation(), torch.nn.Linear(8, 10))
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    for _ in range(150):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(digits.x_train), digits.y_train).backward()
        opt.step()
    net.eval()
    program = torch.export.export(net, (digits.x_test[:2],), dynamic_shapes=({0: torch.export.Dim("n", max=4096)},))
    torch.export.save(program, str(tmp_path / "mlp.pt2"))
    from bastion.registry.digest import sha256_file

    weights = convert_mlp(net)
    save_converted(weights, tmp_path / "mlp-he.safetensors", {"sha256": sha256_file(tmp_path / "mlp.pt2")})
    save_converted(weights, tmp_path / "stale-he.safetensors", {"sha256": "0" * 64})
    cfg = parse_config(
        {
            "models": {
                "mlp": {"paths": ["mlp.pt2"], "encrypted": "mlp-he.safetensors", "serve_encrypted": True},
                "stale": {"paths": ["mlp.pt2"], "encrypted": "stale-he.safetensors", "serve_encrypted": True},
            },
            "database": "gw.db",
            "rate": {"requests_per_second": 1000, "inputs_per_minute": 100_000, "inputs_per_day": 1_000_000},
        },
        base=tmp_path,
    )
    gw = Gateway.from_config(cfg, monitors=False)
    try:
        _, key = gw.keys.create("app", ["predict:scores"])
        with serve_in_background(gw) as url:
            client = EncryptedClient(64, 10, depth=4)
            x = digits.x_test[:50]
            logits = predict_remote(client, url, "mlp", key, x)
            assert torch.equal(logits.argmax(1), weights.plaintext(x).argmax(1))
            with pytest.raises(InputValidationError, match="converted from another file"):
                predict_remote(EncryptedClient(64, 10, depth=4), url, "stale", key, x)
    finally:
        gw.close()
