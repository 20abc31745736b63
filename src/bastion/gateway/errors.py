"""The one error type the pipeline raises: an HTTP status, a stable code and a message for the client.

A :class:`GatewayError` is a :class:`~bastion.errors.BastionError` like every other error Bastion raises on
purpose; a 4xx is the client's to fix (exit code 2 where the CLI meets one), a 5xx is the service's (exit code 3).
"""

from __future__ import annotations

from bastion.errors import BastionError


class GatewayError(BastionError):
    """A request the gateway refuses. ``message`` says what was wrong and how to fix it; it never holds a trace."""

    def __init__(self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.exit_code = 2 if 400 <= status < 500 else 3  # type: ignore[misc]
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.request_id: str | None = None  # set by the pipeline once the request is in the audit log

    def to_dict(self) -> dict[str, object]:
        body: dict[str, object] = {"code": self.code, "message": self.message}
        if self.request_id is not None:
            body["request_id"] = self.request_id
        return {"error": body}
