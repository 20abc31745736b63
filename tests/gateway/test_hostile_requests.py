"""Hostile and broken requests get the right 4xx with a clear message, never a 500 or a trace — over real HTTP."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest
from tests.gateway.conftest import Env, running

PREDICT = "/v1/models/digits/predict"
GOOD = [[[[0.5] * 8] * 8]]  # one 1x8x8 input


def _cases(env: Env) -> list[tuple[str, dict[str, object], int, str]]:
    revoked_id = env.gateway.keys.create("gone", ["predict:scores"])
    env.gateway.keys.revoke(revoked_id[0].key_id)
    ok = env.h(env.scores)
    js = {**ok, "content-type": "application/json"}
    big_batch = json.dumps({"inputs": GOOD * 300})
    return [
        ("no key", {"json": {"inputs": GOOD}}, 401, "missing_key"),
        (
            "malformed key",
            {"json": {"inputs": GOOD}, "headers": {"Authorization": "Bearer nope"}},
            401,
            "malformed_key",
        ),
        (
            "wrong key",
            {"json": {"inputs": GOOD}, "headers": env.h(env.scores[:-4] + "AAAA")},
            401,
            "invalid_key",
        ),
        ("revoked key", {"json": {"inputs": GOOD}, "headers": env.h(revoked_id[1])}, 401, "revoked_key"),
        ("huge body", {"content": b"[" + b"0," * 4_200_000 + b"0]", "headers": js}, 413, "body_too_large"),
        ("huge batch", {"content": big_batch, "headers": js}, 413, "batch_too_large"),
        ("wrong shape", {"json": {"inputs": [[0.5] * 64]}, "headers": ok}, 422, "bad_shape"),
        ("ragged", {"json": {"inputs": [[[[0.5] * 8] * 8], [[[0.5] * 7] * 8]]}, "headers": ok}, 422, "bad_value"),
        ("strings", {"json": {"inputs": [[[["a"] * 8] * 8]]}, "headers": ok}, 422, "bad_value"),
        ("booleans", {"json": {"inputs": [[[[True] * 8] * 8]]}, "headers": ok}, 422, "bad_value"),
        ("nulls", {"json": {"inputs": [[[[None] * 8] * 8]]}, "headers": ok}, 422, "bad_value"),
        ("NaN", {"content": '{"inputs": [[[[NaN]]]]}', "headers": js}, 422, "non_finite"),
        ("Infinity", {"content": '{"inputs": [[[[Infinity]]]]}', "headers": js}, 422, "non_finite"),
        (
            "float32 overflow",
            {"content": json.dumps({"inputs": [[[[1e300] * 8] * 8]]}), "headers": js},
            422,
            "non_finite",
        ),
        ("out of bounds", {"json": {"inputs": [[[[1.5] * 8] * 8]]}, "headers": ok}, 422, "out_of_bounds"),
        ("negative", {"json": {"inputs": [[[[-0.1] * 8] * 8]]}, "headers": ok}, 422, "out_of_bounds"),
        ("malformed JSON", {"content": b'{"inputs": [[', "headers": js}, 400, "malformed_json"),
        ("not UTF-8", {"content": b"\xff\xfe\x00", "headers": js}, 400, "malformed_json"),
        ("JSON list", {"content": b"[1, 2]", "headers": js}, 422, "bad_schema"),
        ("no inputs", {"json": {"data": GOOD}, "headers": ok}, 422, "bad_schema"),
        ("empty batch", {"json": {"inputs": []}, "headers": ok}, 422, "bad_schema"),
        (
            "wrong content type",
            {"content": json.dumps({"inputs": GOOD}), "headers": {**ok, "content-type": "text/plain"}},
            415,
            "unsupported_media_type",
        ),
        (
            "no content type",
            {"content": json.dumps({"inputs": GOOD}).encode(), "headers": ok},
            415,
            "unsupported_media_type",
        ),
    ]


@pytest.mark.parametrize("transport", ["uvicorn", "testclient"])
def test_every_hostile_request_gets_the_right_4xx(transport: str, make_env: Callable[..., Env]) -> None:
    env = make_env()

    def check(send: Callable[..., httpx.Response]) -> None:
        for name, kwargs, status, code in _cases(env):
            r = send(PREDICT, **kwargs)
            assert r.status_code == status, (name, r.status_code, r.text[:300])
            body = r.json()
            assert body["error"]["code"] == code, (name, body)
            assert len(body["error"]["message"]) > 10 and "Traceback" not in r.text, name

    if transport == "testclient":
        check(env.client.post)
    else:
        with running(env.gateway) as url, httpx.Client(base_url=url, timeout=30) as client:
            check(client.post)


def test_scopes_and_unknown_routes(env: Env) -> None:
    c = env.client
    assert c.get("/v1/admin/keys", headers=env.h(env.scores)).status_code == 403
    assert c.get("/v1/admin/keys", headers=env.h(env.admin)).status_code == 200
    assert c.post("/v1/models/nope/predict", json={"inputs": GOOD}, headers=env.h(env.scores)).status_code == 404
    assert c.get("/v1/nothing", headers=env.h(env.scores)).json()["error"]["code"] == "not_found"
    assert c.get(PREDICT, headers=env.h(env.scores)).status_code == 405
    # every endpoint but /healthz wants a key
    assert c.get("/healthz").status_code == 200
    for path in ("/openapi.json", "/metrics", "/v1/models", "/v1/admin/threat"):
        assert c.get(path).status_code == 401, path
    assert c.get("/openapi.json", headers=env.h(env.labels)).json()["info"]["title"] == "Bastion gateway"
    bad = c.post("/v1/admin/keys", json={"name": "x", "scopes": ["root"]}, headers=env.h(env.admin))
    assert bad.status_code == 422 and "unknown scope" in bad.json()["error"]["message"]
    assert c.post("/v1/admin/keys", json={"name": "x"}, headers=env.h(env.admin)).status_code == 422


def test_bodies_that_used_to_hurt_are_refused_cleanly(env: Env) -> None:
    """Issue 9's findings: deep nesting, compressed bodies, numbers as strings, /metrics for any key."""
    c, h = env.client, env.h(env.scores)
    js = {"content-type": "application/json", **h}
    deep = b'{"inputs": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    r = c.post(PREDICT, content=deep, headers=js)
    assert r.status_code == 400 and r.json()["error"]["code"] in ("too_deep", "malformed_json")
    ragged_deep = '{"inputs": [' + "[" * 900 + "0" + "]" * 900 + "]}"
    r = c.post(PREDICT, content=ragged_deep.encode(), headers=js)
    assert r.status_code == 400 and r.json()["error"]["code"] == "too_deep"
    import gzip
    import json as _json

    packed = gzip.compress(_json.dumps({"inputs": GOOD}).encode())
    r = c.post(PREDICT, content=packed, headers={**js, "content-encoding": "gzip"})
    assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_encoding"
    as_strings = _json.dumps({"inputs": GOOD}).replace("0.5", '"0.5"')
    r = c.post(PREDICT, content=as_strings.encode(), headers=js)
    assert r.status_code == 422 and r.json()["error"]["code"] == "bad_value" and '"0' in r.json()["error"]["message"]
    assert c.get("/metrics", headers=h).status_code == 403
    assert c.get("/metrics", headers=env.h(env.admin)).status_code == 200


def test_a_bad_key_is_refused_before_its_body_is_read(env: Env) -> None:
    """A huge declared body with a bad key gets its 401 at once: the server never waits for, reads or hashes it."""
    import socket
    import time

    from bastion.gateway.server import serve_in_background

    with serve_in_background(env.gateway) as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as s:
            head = (
                f"POST {PREDICT} HTTP/1.1\r\nHost: {host}\r\ncontent-type: application/json\r\n"
                f"Authorization: Bearer bk_000000000000_{'A' * 43}\r\ncontent-length: 8000000\r\n\r\n"
            )
            t0 = time.perf_counter()
            s.sendall(head.encode())  # and no body at all
            answer = s.recv(4096).decode(errors="replace")
            assert answer.startswith("HTTP/1.1 401") and time.perf_counter() - t0 < 5


def test_failed_authentications_are_limited_per_address(make_env: Callable[..., Env]) -> None:
    env = make_env(limits={"auth_failures_per_minute": 5})
    bad = {"Authorization": f"Bearer bk_000000000000_{'A' * 43}"}
    codes = [env.client.post(PREDICT, json={"inputs": GOOD}, headers=bad).status_code for _ in range(7)]
    assert codes[:5] == [401] * 5 and codes[5:] == [429, 429]
    r = env.client.post(PREDICT, json={"inputs": GOOD}, headers=env.h(env.scores))
    assert r.status_code == 429 and "failed authentications" in r.json()["error"]["message"]  # the address waits
    assert int(r.headers["Retry-After"]) >= 1


def test_a_client_that_leaves_mid_body_is_audited_without_a_traceback(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    import logging
    import socket
    import time

    from bastion.gateway.server import serve_in_background

    with caplog.at_level(logging.ERROR), serve_in_background(env.gateway) as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(
                (
                    f"POST {PREDICT} HTTP/1.1\r\nHost: {host}\r\ncontent-type: application/json\r\n"
                    f"Authorization: Bearer {env.scores}\r\ncontent-length: 5000\r\n\r\n" + '{"inputs": [[[['
                ).encode()
            )
            time.sleep(0.3)
        deadline = time.time() + 5
        while time.time() < deadline:
            decisions = [e.decision for e in env.gateway.store.iter_events()]
            if "refused:client_disconnected" in decisions:
                break
            time.sleep(0.1)
    assert "refused:client_disconnected" in decisions
    assert "Traceback" not in caplog.text and "unexpected error" not in caplog.text


def test_admin_writes_are_checked_before_their_body_is_parsed(env: Env) -> None:
    c = env.client
    url = "/v1/admin/keys"
    big = b'{"name": "' + b"x" * 200_000 + b'", "scopes": ["predict:labels"]}'
    js = {"content-type": "application/json"}
    r = c.post(url, content=big, headers={**js, **env.h(env.scores)})  # not an admin key: refused unparsed
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    r = c.post(url, content=big, headers={**js, **env.h(None)})
    assert r.status_code == 401
    r = c.post(url, content=big, headers={**js, **env.h(env.admin)})  # admin, but far beyond any admin body
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"

    def chunks():  # no Content-Length: the size cannot be checked before reading, so it is refused
        yield b'{"name": "x", "scopes": ["predict:labels"]}'

    r = c.post(url, content=chunks(), headers={**js, **env.h(env.admin)})
    assert r.status_code == 411 and r.json()["error"]["code"] == "length_required"
    decisions = [e.decision for e in env.gateway.store.iter_events()]
    for code in ("forbidden", "missing_key", "body_too_large", "length_required"):
        assert f"refused:{code}" in decisions  # every refusal audited
    ok = c.post(url, json={"name": "fine", "scopes": ["predict:labels"]}, headers=env.h(env.admin))
    assert ok.status_code == 201
