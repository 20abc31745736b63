"""Property-based fuzzing (schemathesis) of every operation in the OpenAPI schema: no input may produce a 5xx."""

from __future__ import annotations

from collections.abc import Callable

import schemathesis
from hypothesis import HealthCheck, given, settings
from tests.gateway.conftest import Env


def test_no_generated_request_produces_a_server_error(make_env: Callable[..., Env]) -> None:
    env = make_env(monitors=True)
    schema = schemathesis.openapi.from_asgi("/openapi.json", env.client.app, headers=env.h(env.admin))
    seen: list[str] = []
    for result in schema.get_all_operations():
        op = result.ok()
        seen.append(f"{op.method.upper()} {op.path}")

        @given(case=op.as_strategy())
        @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def fuzz(case: schemathesis.Case) -> None:
            for key in (env.admin, env.scores, None):
                headers = {} if key is None else {"Authorization": f"Bearer {key}"}
                response = case.call(headers=headers)
                assert response.status_code < 500, (case.method, case.path, response.status_code, response.text[:300])
                assert "Traceback" not in response.text

        fuzz()
    assert "POST /v1/models/{name}/predict" in seen and len(seen) >= 9
