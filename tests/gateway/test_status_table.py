"""Every HTTP status the gateway answers comes from one table; a database failure is never the client's fault."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa
from tests.gateway.conftest import Env

from bastion.data import Dataset
from bastion.errors import BastionError
from bastion.gateway.errors import STATUS, GatewayError

SRC = Path(__file__).resolve().parents[2] / "src" / "bastion" / "gateway"


def test_every_raised_code_has_its_status_in_the_table() -> None:
    raised = set()
    for path in SRC.rglob("*.py"):
        raised |= set(re.findall(r'(?:GatewayError|AuthError)\(\s*"([a-z_]+)"', path.read_text()))
    assert raised and raised <= set(STATUS), raised - set(STATUS)
    err = GatewayError("rate_limited", "slow down")
    assert isinstance(err, BastionError) and err.status == 429 and err.exit_code == 2
    assert GatewayError("audit_unavailable", "x").exit_code == 3


def test_a_failing_database_is_a_503_not_a_client_error(make_env: Callable[..., Env], digits: Dataset) -> None:
    env = make_env()
    with env.gateway.store.engine.begin() as conn:  # the key table disappears under the running gateway
        conn.execute(sa.text("ALTER TABLE api_keys RENAME TO api_keys_gone"))
    r = env.client.post(
        "/v1/models/digits/predict", json={"inputs": digits.x_test[:1].tolist()}, headers=env.h(env.scores)
    )
    assert r.status_code == 503 and r.json()["error"]["code"] == "store_unavailable"
    assert "Traceback" not in r.text and r.json()["error"]["request_id"]
