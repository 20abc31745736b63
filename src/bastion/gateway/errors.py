"""The one error type the pipeline raises, and the one table that decides every HTTP status the gateway answers.

A :class:`GatewayError` is a :class:`~bastion.errors.BastionError` like every other error Bastion raises on
purpose. Raise sites name a stable ``code``; :data:`STATUS` maps it to its HTTP status, so the mapping lives here and
nowhere else. 4xx codes are the client's to fix; 5xx codes are the service's fault (a database or audit log that
is down is never reported as the client's mistake). Where the CLI meets one, a 4xx exits 2 and a 5xx exits 3.
"""

from __future__ import annotations

from bastion.errors import BastionError

STATUS: dict[str, int] = {
    # the request itself
    "malformed_json": 400,
    "unsupported_media_type": 415,
    "unsupported_encoding": 415,
    "too_deep": 400,
    "client_disconnected": 400,
    "request_timeout": 408,  # the body did not arrive within server.body_timeout_s  # the client went away mid-body: audited, never answered
    "body_too_large": 413,
    "length_required": 411,
    "batch_too_large": 413,
    "bad_request": 422,
    "not_convertible": 422,  # the model cannot be served encrypted (not linear, or an ensemble)
    "bad_schema": 422,
    "bad_value": 422,
    "bad_shape": 422,
    "non_finite": 422,
    "out_of_bounds": 422,
    "bad_status": 422,
    "input_rejected": 422,  # the input detectors flagged it and the policy rejects flagged inputs
    # who is asking
    "missing_key": 401,
    "malformed_key": 401,
    "invalid_key": 401,
    "revoked_key": 401,
    "forbidden": 403,
    "quarantined": 403,
    # what they ask for
    "unknown_model": 404,
    "encrypted_off": 404,  # the model is not served encrypted (its entry does not set serve_encrypted)
    "no_such_key": 404,
    "no_such_incident": 404,
    "not_found": 404,
    "method_not_allowed": 405,
    "already_resolved": 409,
    "model_refused": 409,  # a model (re)load refused: its registry artifact failed verification
    # how much they ask
    "rate_limited": 429,
    "over_budget": 413,  # one request holds more inputs than the key may ever send in its window
    # the service's own failures
    "internal": 500,
    "audit_unavailable": 503,
    "store_unavailable": 503,
}


class GatewayError(BastionError):
    """A request the gateway refuses. ``message`` says what was wrong and how to fix it; it never holds a trace."""

    def __init__(
        self, code: str, message: str, *, headers: dict[str, str] | None = None, audit: dict[str, object] | None = None
    ) -> None:
        super().__init__(message)
        if code not in STATUS:
            raise KeyError(f"gateway error code {code!r} has no status in gateway.errors.STATUS")
        self.status = STATUS[code]
        self.exit_code = 2 if self.status < 500 else 3  # type: ignore[misc]
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.audit = audit or {}  # details for the audit event (never sent to the client beyond the message)
        self.request_id: str | None = None  # set by the pipeline once the request is in the audit log

    def to_dict(self) -> dict[str, object]:
        body: dict[str, object] = {"code": self.code, "message": self.message}
        if self.request_id is not None:
            body["request_id"] = self.request_id
        return {"error": body}
