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

    from bastion.gateway import Gateway, create_app, load_config

    cfg = load_config(config)
    gateway = Gateway.from_config(cfg)
    if not gateway.keys.list():
        console.print("[yellow]no API keys yet:[/] create one with `bastion keys create NAME --scope admin -c CONFIG`")
    console.print(
        f"[green]serving[/] {', '.join(gateway.models)} on http://{host}:{port} "
        f"(audit log {cfg.database}; Ctrl-C stops)"
    )
    try:
        uvicorn.run(create_app(gateway), host=host, port=port, log_level="warning", access_log=False)
    finally:
        gateway.close()
