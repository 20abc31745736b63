"""`bastion keys create|list|revoke`: manage the gateway's API keys."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from bastion.cli._console import console, err_console


def admin_session(config: Path) -> Any:
    from bastion.gateway.admin import admin_session as session  # the gateway loads only when a command runs

    return session(config)


keys_app = typer.Typer(help="Create, list and revoke the gateway's API keys.", no_args_is_help=True)
ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="gateway YAML")]


@keys_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="who or what uses the key")],
    scope: Annotated[
        list[str],
        typer.Option(
            "--scope", "-s", help="predict:labels, predict:scores, assessment (a red-team key) or admin (repeatable)"
        ),
    ],
    config: ConfigOpt = Path("gateway.yaml"),
) -> None:
    """Create a key and print it once: only a keyed hash is stored."""
    with admin_session(config) as h:
        record, key = h.keys.create(name, scope)
        h.record("create_key", record.key_id)
    err_console.print(
        f"created key [bold]{record.key_id}[/] ({', '.join(record.scopes)}) for {escape(record.name)}", highlight=False
    )
    err_console.print("[yellow]store it now: it cannot be shown again[/]")
    typer.echo(key)


@keys_app.command("list")
def list_keys(config: ConfigOpt = Path("gateway.yaml")) -> None:
    """List keys (never their secrets)."""
    with admin_session(config) as h:
        records = h.keys.list()
    table = Table("key id", "name", "scopes", "state")
    for r in records:
        table.add_row(r.key_id, escape(r.name), ", ".join(r.scopes), "active" if r.active else "revoked")
    console.print(table)


@keys_app.command("revoke")
def revoke(key_id: Annotated[str, typer.Argument()], config: ConfigOpt = Path("gateway.yaml")) -> None:
    """Revoke a key; a running gateway refuses it from its next request."""
    from bastion.errors import InputValidationError

    with admin_session(config) as h:
        done = h.keys.revoke(key_id)
        h.record("revoke_key", key_id, status=200 if done else 404)
    if not done:
        raise InputValidationError(f"no active key {key_id!r} (see `bastion keys list`)")
    console.print(f"revoked {escape(key_id)}")
