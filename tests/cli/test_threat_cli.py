"""`bastion threat list|set|reset` against a running gateway's admin API."""

from __future__ import annotations

from collections.abc import Callable

from tests.cli._run import run_cli
from tests.gateway.conftest import Env
from tests.gateway.conftest import make_env as make_env  # the gateway fixture, reused here

from bastion.gateway.server import serve_in_background


def test_threat_commands_steer_a_running_gateway(make_env: Callable[..., Env]) -> None:
    env = make_env()
    key_id = env.gateway.keys.authenticate(env.scores).key_id
    with serve_in_background(env.gateway) as url:
        auth = ["--url", url, "--admin-key", env.admin]
        listed = run_cli("threat", "list", *auth)
        assert listed.returncode == 0 and "service level: normal" in listed.stdout and "no key above" in listed.stdout
        pinned = run_cli("threat", "set", key_id, "under_attack", "--reason", "drill", *auth)
        assert pinned.returncode == 0 and "pinned at under_attack" in pinned.stdout
        assert env.gateway.threat.level(key_id).label == "under_attack"
        listed = run_cli("threat", "list", *auth)
        assert key_id in listed.stdout and "under_attack" in listed.stdout
        assert run_cli("threat", "reset", key_id, *auth).returncode == 0
        assert env.gateway.threat.level(key_id).label == "normal"
        bad = run_cli("threat", "set", key_id, "panic", *auth)
        assert bad.returncode == 2 and bad.stderr.startswith("error:") and len(bad.stderr.strip().splitlines()) == 1
        wrong = run_cli("threat", "list", "--url", url, "--admin-key", env.scores)  # not an admin key
        assert wrong.returncode == 2 and "refused (403)" in wrong.stderr
    gone = run_cli("threat", "list", *auth)
    assert gone.returncode == 3 and "cannot reach the gateway" in gone.stderr
    assert run_cli("threat", "list", "--url", url).returncode == 2  # no admin key
