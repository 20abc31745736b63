"""The HTTP face of the gateway: a thin FastAPI app over the framework-free pipeline.

Every endpoint but ``/healthz`` takes ``Authorization: Bearer <key>``. Errors always have the shape
``{"error": {"code": ..., "message": ...}}`` with a 4xx status for anything the client sent; an unexpected failure
is a 500 with a reference id and no trace (the trace goes to the server log).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Annotated, Any

import orjson
from fastapi import FastAPI, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from bastion._version import __version__
from bastion.gateway.auth import Principal, Scope
from bastion.gateway.errors import STATUS, GatewayError
from bastion.gateway.pipeline import Gateway, PredictRequest
from bastion.monitors.threat import ThreatLevel

log = logging.getLogger("bastion.gateway")

# Requests up to this size run the pipeline on the event loop itself, their networks on the numeric worker
# (``Gateway.predict_async``); larger ones (big batches, whose parsing alone would hold the loop) run whole in the
# thread pool. Measured on the 2-core development machine with 4 concurrent clients sending one 28x28 input, before
# the numeric worker: 589 requests/s on the loop vs 427 through the thread pool, where threads contend for the GIL
# between the pipeline's many small calls.
INLINE_BODY_BYTES = 65_536

_ERROR = {"description": "Refused", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
_ERRORS: dict[int | str, dict[str, Any]] = {code: _ERROR for code in (400, 401, 403, 404, 409, 413, 415, 422, 429)}


IncidentId = Annotated[int, Path(ge=1, le=2**62)]
KeyId = Annotated[str, Path(min_length=1, max_length=64)]
ModelName = Annotated[str, Path(min_length=1, max_length=64)]


class ErrorDetail(BaseModel):
    code: str
    message: str
    request_id: str | None = Field(None, description="the audit event of this request, when it got that far")


class Error(BaseModel):
    error: ErrorDetail


class PredictResponse(BaseModel):
    request_id: str
    model: str
    labels: list[int]
    release: str = Field(description="labels, top_k or scores: how much this answer reveals")
    threat_level: str
    scores: list[list[float]] | None = None
    top_k: list[list[dict[str, float]]] | None = None


class NewKey(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    scopes: list[str] = Field(min_length=1, max_length=3)


class IncidentUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: str = Field(pattern="^(acknowledged|resolved)$")
    note: str = Field("", max_length=2000)


class LevelUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    level: str | None = Field(None, description="normal, elevated or under_attack; null resets and unpins the key")
    reason: str = Field("", max_length=2000)


def _token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def _client(request: Request) -> str | None:
    return request.client.host if request.client else None


def _error(code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=STATUS[code])


async def _read_limited(request: Request, limit: int, timeout: float) -> bytes:
    """The body, but never more than ``limit + 1`` bytes of it (enough to know it is too large), and only if it
    arrives within ``timeout`` seconds (a client trickling a body ties up a connection: 408)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return b"\0" * (limit + 1)
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                chunks.append(chunk)
                size += len(chunk)
                if size > limit:
                    break
    except TimeoutError:
        raise GatewayError(
            "request_timeout", f"the body did not arrive within {timeout:g} s; send it at once, or smaller"
        ) from None
    return b"".join(chunks)


ADMIN_BODY_BYTES = 65_536  # an admin body is a key name or a level change: a few hundred bytes


class AdminGuard:
    """Pure ASGI middleware for ``/v1/admin/*`` writes: the admin key is checked from the headers and the declared
    body size capped *before* anything reads or parses the body (FastAPI parses body models before the route runs).
    Every refusal is audited like any other."""

    def __init__(self, app: Any, gateway: Gateway, limit: int = ADMIN_BODY_BYTES) -> None:
        self.app, self.gateway, self.limit = app, gateway, limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in ("POST", "PUT", "PATCH")
            or not scope["path"].startswith("/v1/admin/")
        ):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        auth = headers.get("authorization", "")
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        client = scope["client"][0] if scope.get("client") else None
        declared = headers.get("content-length")
        refusal: GatewayError | None = None
        try:
            principal = self.gateway.keys.authenticate(token)
            self.gateway.keys.require(principal, Scope.ADMIN)
        except GatewayError as exc:
            refusal = exc
        if refusal is None and (declared is None or not declared.isdigit()):
            refusal = GatewayError("length_required", "send admin requests with a Content-Length header")
        elif refusal is None and int(declared or 0) > self.limit:
            refusal = GatewayError("body_too_large", f"admin request bodies are at most {self.limit} bytes")
        if refusal is None:
            await self.app(scope, receive, send)
            return
        try:
            rid = await run_in_threadpool(self.gateway.record_refusal, token, refusal.status, refusal.code, client)
            refusal.request_id = rid
        except GatewayError as exc:  # the audit log is down
            refusal = exc
        body = orjson.dumps(refusal.to_dict())
        await send(
            {
                "type": "http.response.start",
                "status": refusal.status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


def create_app(gateway: Gateway) -> FastAPI:
    """The FastAPI app serving ``gateway``."""
    app = FastAPI(
        title="Bastion gateway",
        version=__version__,
        description="A protected inference API: keys, limits, validation, monitors, threat levels and an audit log.",
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.gateway = gateway
    app.add_middleware(AdminGuard, gateway=gateway)

    def openapi_schema() -> dict[str, Any]:
        """FastAPI's schema plus what it cannot infer: the Error body every refusal uses, and bearer-key security on
        every operation but the health check."""
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        components = schema.setdefault("components", {})
        error = Error.model_json_schema(ref_template="#/components/schemas/{model}")
        components.setdefault("schemas", {}).update(error.pop("$defs", {}))
        components["schemas"]["Error"] = error
        components["securitySchemes"] = {
            "bearerKey": {"type": "http", "scheme": "bearer", "description": "an API key: bk_<id>_<secret>"}
        }
        schema["security"] = [{"bearerKey": []}]
        for path, ops in schema.get("paths", {}).items():
            if path == "/healthz":
                for op in ops.values():
                    op["security"] = []
        app.openapi_schema = schema
        return schema

    app.openapi = openapi_schema  # type: ignore[method-assign]
    metrics = gateway.metrics

    @app.exception_handler(GatewayError)
    async def _gateway_error(request: Request, exc: GatewayError) -> JSONResponse:
        route = request.scope.get("route")  # the path template, not the path: ids must not become label values
        metrics.requests.labels(getattr(route, "path", "unknown"), str(exc.status)).inc()
        return JSONResponse(exc.to_dict(), status_code=exc.status, headers=exc.headers or None)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'body'}: {e.get('msg', 'invalid')}"
            for e in exc.errors()
        )
        message = problems or "the request body is not valid for this endpoint"
        return await _refused(request, "bad_request", message)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
        message = {404: f"no endpoint {request.url.path}", 405: f"{request.method} is not allowed here"}.get(
            exc.status_code, str(exc.detail)
        )
        return await _refused(request, code, message)

    async def _refused(request: Request, code: str, message: str) -> JSONResponse:
        """Refusals by the web layer are audited too: every request leaves an event."""
        status = STATUS[code]
        try:
            rid = await run_in_threadpool(gateway.record_refusal, _token(request), status, code, _client(request))
        except GatewayError as exc:  # the audit log is down
            return JSONResponse(exc.to_dict(), status_code=exc.status)
        return JSONResponse({"error": {"code": code, "message": message, "request_id": rid}}, status_code=status)

    @app.exception_handler(ClientDisconnect)
    async def _disconnected(request: Request, exc: ClientDisconnect) -> JSONResponse:
        """A client that leaves mid-body is the client's doing: an audited refusal, no traceback in the log."""
        return await _refused(request, "client_disconnected", "the client closed the connection before the whole body")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        ref = uuid.uuid4().hex[:12]
        log.exception("unexpected error %s on %s %s", ref, request.method, request.url.path)
        return _error("internal", f"internal error (reference {ref}); the request may be retried")

    async def admin(request: Request, action: str, fn: Any) -> Any:
        return await run_in_threadpool(gateway.admin, _token(request), action, fn, _client(request))

    async def any_key(request: Request, action: str, fn: Any) -> Any:
        return await run_in_threadpool(gateway.keyed, _token(request), action, fn, _client(request))

    @app.get("/healthz", tags=["service"])
    async def healthz() -> dict[str, Any]:
        """Liveness, and which shared component (rate-limit storage, state bus) is down if any: the only endpoint
        that needs no key."""
        return gateway.health()

    @app.get("/openapi.json", tags=["service"], include_in_schema=False)
    async def openapi(request: Request) -> JSONResponse:
        await any_key(request, "openapi", lambda p: None)
        return JSONResponse(app.openapi())

    @app.get("/metrics", tags=["service"], response_class=Response, responses=_ERRORS)
    async def prometheus(request: Request) -> Response:
        """Prometheus metrics (admin keys only: they describe every client's traffic)."""
        await admin(request, "metrics", lambda p: None)
        gateway.health()  # refreshes the degraded-mode gauges (the state bus reports its connection when asked)
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models", tags=["predict"], responses=_ERRORS)
    async def list_models(request: Request) -> dict[str, Any]:
        """The served models: input shape, classes, bounds, ensemble size."""

        def run(_: Principal) -> dict[str, Any]:
            return {
                "models": [
                    {
                        "name": n,
                        "input_shape": list(m.spec.input_shape),
                        "num_classes": m.spec.num_classes,
                        "bounds": list(m.spec.bounds),
                        "members": len(m),
                    }
                    for n, m in gateway.models.items()
                ]
            }

        result: dict[str, Any] = await any_key(request, "models", run)
        return result

    @app.post(
        "/v1/models/{name}/predict",
        tags=["predict"],
        response_model=PredictResponse,
        responses=_ERRORS,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["inputs"],
                            "additionalProperties": False,
                            "properties": {
                                "inputs": {
                                    "type": "array",
                                    "description": "a batch of inputs, each a nested list of the model's input shape",
                                    "items": {},
                                }
                            },
                        }
                    }
                },
            }
        },
    )
    async def predict(name: ModelName, request: Request) -> Response:
        """Predict a batch. What comes back (labels, top-k or scores) depends on the key's scope and threat level."""
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):  # never decompress: a small gzip body can expand without bound
            return await _refused(request, "unsupported_encoding", f"send the body uncompressed, not {encoding}")
        token = _token(request)
        try:  # the key first, from the headers: a bad key never gets its body read, let alone parsed
            principal = gateway.keys.authenticate(token)
        except Exception:  # a refused key, or a failing store: the pipeline answers and audits it (401/403/503)
            refused = PredictRequest(token, name, b"", request.headers.get("content-type"), _client(request))
            reply = await run_in_threadpool(gateway.predict, refused)  # raises the audited 401/403
            return Response(orjson.dumps(reply.to_dict()), media_type="application/json")  # pragma: no cover
        try:
            body = await _read_limited(
                request, gateway.config.limits.max_body_bytes, gateway.config.server.body_timeout_s
            )
        except GatewayError as exc:  # audited like every refusal, with the key it came with
            return await _refused(request, exc.code, exc.message)
        req = PredictRequest(token, name, body, request.headers.get("content-type"), _client(request), principal)
        if len(body) <= INLINE_BODY_BYTES:
            reply = await gateway.predict_async(req)
        else:
            reply = await run_in_threadpool(gateway.predict, req)
        metrics.requests.labels("/v1/models/{name}/predict", "200").inc()
        return Response(orjson.dumps(reply.to_dict()), media_type="application/json")

    async def _encrypted_body(request: Request, name: str, fn: Any) -> Any:
        """Key from the headers first, then the body within limits.max_encrypted_bytes, then ``fn`` in a thread."""
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            return await _refused(request, "unsupported_encoding", f"send the body uncompressed, not {encoding}")
        token, client = _token(request), _client(request)
        try:
            gateway.keys.authenticate(token)
        except Exception:  # the pipeline answers and audits the refusal (401/403/503)
            return await run_in_threadpool(fn, token, name, b"", client)
        limit = gateway.config.limits.max_encrypted_bytes
        try:
            body = await _read_limited(request, limit, gateway.config.server.body_timeout_s)
        except GatewayError as exc:
            return await _refused(request, exc.code, exc.message)
        if len(body) > limit:
            return await _refused(
                request, "body_too_large", f"encrypted bodies are at most {limit:,} bytes (limits.max_encrypted_bytes)"
            )
        return await run_in_threadpool(fn, token, name, body, client)

    @app.post("/v1/models/{name}/encrypted-contexts", tags=["encrypted"], responses=_ERRORS)
    async def encrypted_context(name: ModelName, request: Request) -> Any:
        """Register the public half of a client's CKKS context (application/octet-stream, TenSEAL-serialized, no
        secret key) for encrypted prediction with this key; returns its context_id."""
        return await _encrypted_body(request, name, gateway.register_encrypted_context)

    @app.post("/v1/models/{name}/predict-encrypted", tags=["encrypted"], responses=_ERRORS)
    async def predict_encrypted(name: ModelName, request: Request) -> Response:
        """Evaluate an encrypted query (application/octet-stream, bastion.defenses.encrypted.wire) under a context
        this key registered; answers the encrypted logits in the same format. Needs predict:scores."""
        out = await _encrypted_body(request, name, gateway.predict_encrypted)
        if isinstance(out, Response):
            return out
        metrics.requests.labels("/v1/models/{name}/predict-encrypted", "200").inc()
        return Response(out, media_type="application/octet-stream")

    @app.get("/v1/admin/keys", tags=["admin"], responses=_ERRORS)
    async def list_keys(request: Request) -> dict[str, Any]:
        def run(_: Principal) -> dict[str, Any]:
            return {
                "keys": [
                    {
                        "key_id": k.key_id,
                        "name": k.name,
                        "scopes": list(k.scopes),
                        "created_at": k.created_at,
                        "revoked_at": k.revoked_at,
                    }
                    for k in gateway.keys.list()
                ]
            }

        result: dict[str, Any] = await admin(request, "list_keys", run)
        return result

    @app.post("/v1/admin/keys", tags=["admin"], status_code=201, responses=_ERRORS)
    async def create_key(request: Request, body: NewKey) -> dict[str, Any]:
        """Create a key. The key is in this response only: it is stored as a keyed hash."""

        def run(_: Principal) -> dict[str, Any]:
            try:
                record, key = gateway.keys.create(body.name, body.scopes)
            except Exception as exc:  # InputValidationError from scope checks
                raise GatewayError("bad_request", str(exc).splitlines()[0]) from None
            return {"key_id": record.key_id, "name": record.name, "scopes": list(record.scopes), "key": key}

        result: dict[str, Any] = await admin(request, "create_key", run)
        return result

    @app.delete("/v1/admin/keys/{key_id}", tags=["admin"], responses=_ERRORS)
    async def revoke_key(request: Request, key_id: KeyId) -> dict[str, Any]:
        """Revoke a key; it stops working with the next request."""

        def run(_: Principal) -> dict[str, Any]:
            if not gateway.keys.revoke(key_id):
                raise GatewayError("no_such_key", f"no active key {key_id!r}")
            gateway.forget_key(key_id)  # its threat state and monitor history go with it
            return {"key_id": key_id, "revoked": True}

        result: dict[str, Any] = await admin(request, "revoke_key", run)
        return result

    @app.post("/v1/admin/models/{name}/reload", tags=["admin"], responses=_ERRORS)
    async def reload_model(request: Request, name: ModelName) -> dict[str, Any]:
        """Load a served model again (a registry NAME picks up its newest version); a registry artifact is verified
        first and refused (409, the old model keeps serving) when it fails."""
        result: dict[str, Any] = await admin(request, "reload_model", lambda _: gateway.reload_model(name))
        return result

    @app.get("/dashboard", tags=["service"], include_in_schema=False)
    async def dashboard() -> Response:
        """The dashboard page: static, no key needed to load it; everything it shows comes from the admin API with
        the admin key typed into it."""
        from importlib.resources import files

        page = files("bastion.gateway.dashboard").joinpath("index.html").read_bytes()
        return Response(
            page,
            media_type="text/html; charset=utf-8",
            headers={
                "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer",
                "Cache-Control": "no-store",
            },
        )

    @app.get("/v1/admin/audit", tags=["admin"], responses=_ERRORS)
    async def recent_audit(request: Request, limit: int = 50) -> Any:
        """The newest audit events (newest first; at most 1,000)."""
        if not 1 <= limit <= 1000:
            return await _refused(request, "bad_request", "limit must be between 1 and 1000")
        result: dict[str, Any] = await admin(
            request, "audit", lambda _: {"events": [e.to_dict() for e in gateway.store.recent_events(limit)]}
        )
        return result

    @app.get("/v1/admin/traffic", tags=["admin"], responses=_ERRORS)
    async def traffic(request: Request, minutes: int = 60) -> Any:
        """Requests, inputs, refusals and alerts per minute and per key over the last ``minutes`` (at most 1,440)."""
        if not 1 <= minutes <= 1440:
            return await _refused(request, "bad_request", "minutes must be between 1 and 1440")
        result: dict[str, Any] = await admin(request, "traffic", lambda _: gateway.traffic(minutes))
        return result

    @app.get("/v1/admin/incidents", tags=["admin"], responses=_ERRORS)
    async def list_incidents(request: Request, status: str | None = None) -> dict[str, Any]:
        result: dict[str, Any] = await admin(
            request, "list_incidents", lambda _: {"incidents": [i.to_dict() for i in gateway.incidents.list(status)]}
        )
        return result

    @app.post("/v1/admin/incidents/{incident_id}", tags=["admin"], responses=_ERRORS)
    async def update_incident(request: Request, incident_id: IncidentId, body: IncidentUpdate) -> dict[str, Any]:
        """Acknowledge or resolve an incident."""
        result: dict[str, Any] = await admin(
            request,
            "update_incident",
            lambda p: gateway.incidents.transition(incident_id, body.status, p.key_id, body.note).to_dict(),
        )
        return result

    @app.get("/v1/admin/intel", tags=["admin"], responses=_ERRORS)
    async def intel(request: Request) -> dict[str, Any]:
        """Imported threat intelligence in force: bundles, and per model the fingerprint indicators active, narrowed
        or dropped against the model's own clean data; listed client networks."""
        result: dict[str, Any] = await admin(request, "intel", lambda _: gateway.intel_status())
        return result

    @app.get("/v1/admin/threat", tags=["admin"], responses=_ERRORS)
    async def threat(request: Request) -> dict[str, Any]:
        """The service's threat level and every key above normal."""
        result: dict[str, Any] = await admin(request, "threat", lambda _: gateway.status())
        return result

    @app.put("/v1/admin/threat/{key_id}", tags=["admin"], responses=_ERRORS)
    async def set_level(request: Request, key_id: KeyId, body: LevelUpdate) -> dict[str, Any]:
        """Pin a key's threat level, or reset it (level null) to normal."""

        def run(p: Principal) -> dict[str, Any]:
            try:
                level = None if body.level is None else ThreatLevel.parse(body.level)
            except ValueError as exc:
                raise GatewayError("bad_request", str(exc)) from None
            return gateway.set_level(key_id, level, p.key_id, body.reason)

        result: dict[str, Any] = await admin(request, "set_level", run)
        return result

    return app
