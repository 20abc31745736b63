"""Serve a gateway under uvicorn: the server settings `bastion serve` uses, and a background server for the demo,
notebooks and integration tests.

uvicorn closes idle keep-alive connections but waits forever for a client that connects and sends nothing, or
half a header (slowloris). :class:`DeadlineH11Protocol` closes a connection whose request headers are not complete
within ``server.header_timeout_s`` of it connecting or sending its first byte of a new request; the body deadline is
the app's (``_read_limited``), and ``server.max_connections`` caps what is in flight (503 beyond).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from bastion.errors import BastionError
from bastion.gateway.app import create_app
from bastion.gateway.pipeline import Gateway


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class DeadlineH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline on request headers (see the module docstring)."""

    header_timeout: float = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._seen_cycle: Any = None
        self._deadline: asyncio.TimerHandle | None = None
        self._arm()

    def _arm(self) -> None:
        if self._deadline is None:
            self._deadline = self.loop.call_later(self.header_timeout, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if self.cycle is None or (self.cycle is self._seen_cycle and self.cycle.response_complete):
            self.transport.close()  # headers never completed: nothing was asked, nothing to answer or audit

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.cycle is not None and self.cycle is not self._seen_cycle:
            self._seen_cycle = self.cycle  # a request's headers are in: the body deadline is the app's
            self._disarm()
        elif self.cycle is None or self.cycle.response_complete:
            self._arm()  # bytes of a next request's headers: they too must complete in time

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def uvicorn_config(gateway: Gateway, host: str, port: int, *, log_level: str = "warning") -> uvicorn.Config:
    """The uvicorn settings for ``gateway``: its server section (deadlines, connection cap, proxy headers)."""
    sc = gateway.config.server
    protocol = type("GatewayH11Protocol", (DeadlineH11Protocol,), {"header_timeout": sc.header_timeout_s})
    return uvicorn.Config(
        create_app(gateway),
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        http=protocol,
        timeout_keep_alive=sc.keep_alive_s,  # type: ignore[arg-type]
        limit_concurrency=sc.max_connections,
        proxy_headers=sc.proxy_headers,
        forwarded_allow_ips=sc.forwarded_allow_ips if sc.proxy_headers else [],
    )


@contextmanager
def serve_in_background(gateway: Gateway, host: str = "127.0.0.1", port: int | None = None) -> Iterator[str]:
    """Serve ``gateway`` for the duration of the block; yields its base URL once ``/healthz`` answers."""
    port = port or free_port(host)
    server = uvicorn.Server(uvicorn_config(gateway, host, port, log_level="error"))
    thread = threading.Thread(target=server.run, name="bastion-gateway", daemon=True)
    thread.start()
    url = f"http://{host}:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or not thread.is_alive():
            server.should_exit = True
            raise BastionError(f"the gateway did not start on {url}")
        time.sleep(0.05)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)
