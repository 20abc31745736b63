"""Run a gateway under uvicorn in a background thread: for the demo, notebooks and integration tests."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import uvicorn

from bastion.errors import BastionError
from bastion.gateway.app import create_app
from bastion.gateway.pipeline import Gateway


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@contextmanager
def serve_in_background(gateway: Gateway, host: str = "127.0.0.1", port: int | None = None) -> Iterator[str]:
    """Serve ``gateway`` for the duration of the block; yields its base URL once ``/healthz`` answers."""
    port = port or free_port(host)
    server = uvicorn.Server(
        uvicorn.Config(create_app(gateway), host=host, port=port, log_level="error", access_log=False)
    )
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
