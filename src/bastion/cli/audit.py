"""`bastion audit export`: the gateway's audit log as JSON lines."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bastion.cli._console import console

audit_app = typer.Typer(help="Export and verify the gateway's audit log.", no_args_is_help=True)


@audit_app.command("export")
def export(
    out: Annotated[Path, typer.Option("--out", "-o", help="JSON-lines file to write")] = Path("audit.jsonl"),
    config: Annotated[Path, typer.Option("--config", "-c", help="gateway YAML")] = Path("gateway.yaml"),
    after: Annotated[int, typer.Option(min=0, help="only events with a larger event_id")] = 0,
) -> None:
    """Write every audit event (one JSON object per line), oldest first."""
    from bastion.gateway.admin import admin_session

    with admin_session(config) as h:
        n = h.audit.export(out, after)
    console.print(f"wrote {n} audit events to {out}")


@audit_app.command("verify")
def verify(
    config: Annotated[Path, typer.Option("--config", "-c", help="gateway YAML")] = Path("gateway.yaml"),
) -> None:
    """Recompute the audit log's hash chain; exit 1 at the first edited, deleted or inserted row."""
    from bastion.gateway.admin import admin_session

    with admin_session(config) as h:
        checked, unchained, broken = h.audit.verify()
    older = f" ({unchained} older rows predate the chain)" if unchained else ""
    if broken is not None:
        console.print(
            f"[red]audit chain broken at event {broken}[/]: that row or the one before it was edited, deleted or "
            f"inserted after the fact; {checked} rows before it verify{older}"
        )
        raise typer.Exit(1)
    console.print(f"audit chain intact: {checked} events verified{older}")
