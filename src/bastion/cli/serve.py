"""`bastion serve`: put models behind the gateway, served by uvicorn."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bastion.cli._console import console


def serve(
    config: Annotated[Path, typer.Option("--config", "-c", help="gateway YAML (see docs/gateway.example.yaml)")] = Path(
        "gateway.yaml"
    ),
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="port to listen on")] = 8080,
) -> None:
    """Serve the configured models behind authentication, limits, validation, monitors and an audit log."""
    import uvicorn
    from rich.markup import escape

    from bastion.gateway import Gateway, load_config
    from bastion.gateway.server import uvicorn_config
    from bastion.gateway.store.sql import masked_url

    cfg = load_config(config)
    _check_port(host, port)  # before loading models: a busy port is one line, not a traceback after startup
    gateway = Gateway.from_config(cfg)
    if not gateway.keys.list():
        console.print("[yellow]no API keys yet:[/] create one with `bastion keys create NAME --scope admin -c CONFIG`")
    console.print(
        f"[green]serving[/] {', '.join(gateway.models)} on http://{host}:{port} "
        f"(audit log {escape(masked_url(cfg.database))}; Ctrl-C stops)"
    )
    try:
        uvicorn.Server(uvicorn_config(gateway, host, port)).run()
    finally:
        gateway.close()


def _check_port(host: str, port: int) -> None:
    import socket

    from bastion.errors import ConfigError

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise ConfigError(f"cannot listen on {host!r}: {e.strerror}; give an address such as 127.0.0.1") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(address)
        except OSError as e:
            raise ConfigError(
                f"cannot listen on {host}:{port}: {e.strerror}; stop what uses it or choose another --port"
            ) from None
