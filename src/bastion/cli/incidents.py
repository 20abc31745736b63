"""`bastion incidents list|ack|resolve`: the gateway's security incidents."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from bastion.cli._console import console

incidents_app = typer.Typer(help="List, acknowledge and resolve the gateway's incidents.", no_args_is_help=True)
ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="gateway YAML")]


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")


@incidents_app.command("list")
def list_incidents(
    config: ConfigOpt = Path("gateway.yaml"),
    status: Annotated[str | None, typer.Option(help="open, acknowledged or resolved")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """List incidents, newest last."""
    from bastion.gateway.admin import admin_session

    with admin_session(config) as h:
        records = h.incidents.list(status)
    if as_json:
        typer.echo(json.dumps([r.to_dict() for r in records], indent=2))
        return
    table = Table("id", "status", "kind", "key", "severity", "alerts", "ATLAS", "opened (UTC)", "summary")
    for r in records:
        table.add_row(
            str(r.incident_id),
            r.status,
            escape(r.kind),
            escape(r.key_id or "-"),
            r.severity,
            str(r.alert_count),
            r.atlas,
            _when(r.opened_at),
            escape(r.summary),
        )
    console.print(table)


def _transition(config: Path, incident_id: int, status: str, note: str) -> None:
    from bastion.gateway.admin import admin_session

    with admin_session(config) as h:
        rec = h.incidents.transition(incident_id, status, "cli", note)
        h.record(f"incident_{status}", str(incident_id))
    console.print(f"incident {rec.incident_id} is now {rec.status}")


@incidents_app.command("ack")
def ack(
    incident_id: Annotated[int, typer.Argument()],
    config: ConfigOpt = Path("gateway.yaml"),
    note: Annotated[str, typer.Option(help="why, for the record")] = "",
) -> None:
    """Acknowledge an incident: someone is on it."""
    _transition(config, incident_id, "acknowledged", note)


@incidents_app.command("resolve")
def resolve(
    incident_id: Annotated[int, typer.Argument()],
    config: ConfigOpt = Path("gateway.yaml"),
    note: Annotated[str, typer.Option(help="what was done")] = "",
) -> None:
    """Resolve an incident."""
    _transition(config, incident_id, "resolved", note)
