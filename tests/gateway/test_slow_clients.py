"""Slow and spoofing clients over real uvicorn: header and body deadlines, the connection cap, proxy headers off."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import httpx
import pytest
from tests.gateway.conftest import Env, running

from bastion.errors import ConfigError
from bastion.gateway import parse_config

PREDICT = "/v1/models/digits/predict"
FAST = {"header_timeout_s": 1.0, "body_timeout_s": 1.0, "keep_alive_s": 1.0}


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def _closed_within(s: socket.socket, seconds: float) -> float:
    """Seconds until the server closed ``s`` (reads EOF), failing after ``seconds``."""
    t0 = time.monotonic()
    s.settimeout(seconds)
    try:
        while s.recv(4096):
            pass
    except TimeoutError:
        pytest.fail(f"the server kept the connection open for more than {seconds} s")
    except ConnectionResetError:
        pass
    return time.monotonic() - t0


def test_silent_and_half_header_connections_are_closed_at_the_header_deadline(make_env: Callable[..., Env]) -> None:
    env = make_env(server=FAST)
    with running(env.gateway) as url:
        with _connect(url) as silent, _connect(url) as half:
            half.sendall(b"POST /v1/models/digits/predict HTTP/1.1\r\nHost: x\r\nAuthor")
            assert _closed_within(silent, 5) < 4
            assert _closed_within(half, 5) < 4
        # a well-behaved client on a fresh connection is still served
        assert httpx.get(f"{url}/healthz").status_code == 200


def test_a_trickled_body_gets_408_at_the_body_deadline_and_is_audited(make_env: Callable[..., Env]) -> None:
    env = make_env(server=FAST)
    with running(env.gateway) as url, _connect(url) as s:
        s.sendall(
            (
                f"POST {PREDICT} HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
                f"Authorization: Bearer {env.scores}\r\ncontent-length: 5000\r\n\r\n" + '{"inputs": [[[['
            ).encode()
        )
        s.settimeout(5)
        reply = ""
        while '"request_timeout"' not in reply:  # headers and body may come in separate reads
            chunk = s.recv(4096).decode()
            if not chunk:
                break
            reply += chunk
    assert reply.startswith("HTTP/1.1 408"), reply[:80]
    assert '"request_timeout"' in reply
    events = [e for e in env.gateway.store.iter_events() if e.decision == "refused:request_timeout"]
    assert len(events) == 1 and events[0].status == 408
    assert events[0].key_id == env.gateway.keys.authenticate(env.scores).key_id


def test_connections_beyond_the_cap_get_503(make_env: Callable[..., Env]) -> None:
    env = make_env(server={**FAST, "body_timeout_s": 5.0, "max_connections": 3})
    with running(env.gateway) as url:
        time.sleep(0.5)  # the start-up check's connection is gone
        held = [_connect(url) for _ in range(2)]
        try:
            for s in held:  # two requests in flight, each waiting for its body
                s.sendall(
                    f"POST {PREDICT} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {env.scores}\r\n"
                    "content-type: application/json\r\ncontent-length: 100\r\n\r\n{".encode()
                )
            for s in held:  # each request's headers are in: the server answers them (or the cap) from now on
                s.settimeout(0.5)
                with pytest.raises(TimeoutError):
                    s.recv(1)
            r = httpx.get(f"{url}/healthz", timeout=5)
            assert r.status_code == 503, r.text
        finally:
            for s in held:
                s.close()
        time.sleep(0.3)
        assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200


def test_forwarded_for_headers_are_ignored_unless_configured(make_env: Callable[..., Env], tmp_path: object) -> None:
    env = make_env()
    with running(env.gateway) as url:
        r = httpx.post(
            f"{url}{PREDICT}",
            json={"inputs": [[[[0.0] * 8] * 8]]},
            headers={"Authorization": f"Bearer {env.scores}", "X-Forwarded-For": "203.0.113.9"},
        )
    assert r.status_code == 200
    event = next(e for e in env.gateway.store.iter_events() if e.request_id == r.json()["request_id"])
    assert event.client == "127.0.0.1"  # the connecting address, not what the client claims
    with pytest.raises(ConfigError, match="forwarded_allow_ips"):
        parse_config({"models": {"m": {"paths": ["m.onnx"]}}, "server": {"proxy_headers": True}}, base=env.tmp)


def test_a_configured_proxy_is_trusted(make_env: Callable[..., Env]) -> None:
    env = make_env(server={"proxy_headers": True, "forwarded_allow_ips": ["127.0.0.1"]})
    with running(env.gateway) as url:
        r = httpx.post(
            f"{url}{PREDICT}",
            json={"inputs": [[[[0.0] * 8] * 8]]},
            headers={"Authorization": f"Bearer {env.scores}", "X-Forwarded-For": "203.0.113.9"},
        )
    event = next(e for e in env.gateway.store.iter_events() if e.request_id == r.json()["request_id"])
    assert event.client == "203.0.113.9"
