"""`bastion threat list|set|reset`: see and steer a running gateway's threat levels through its admin API.

Threat levels live in the running gateway's memory (every change is also in its database), so these commands talk
to the gateway over HTTP with an admin key, unlike `bastion keys`, which works on the database directly.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from bastion.cli._console import console
from bastion.errors import ConfigError, RemoteModelError

threat_app = typer.Typer(help="List, pin and reset a running gateway's threat levels.", no_args_is_help=True)
UrlOpt = Annotated[str, typer.Option("--url", envvar="BASTION_GATEWAY_URL", help="the gateway's base URL")]
AdminOpt = Annotated[
    str | None, typer.Option("--admin-key", envvar="BASTION_ADMIN_KEY", help="a key with the admin scope")
]


def _call(method: str, url: str, admin_key: str | None, path: str, body: dict[str, Any] | None = None) -> Any:
    import httpx

    if not admin_key:
        raise ConfigError(
            "give an admin key with --admin-key or $BASTION_ADMIN_KEY (bastion keys create NAME --scope admin)"
        )
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"--url must start with http:// or https://, got {url!r}")
    try:
        r = httpx.request(
            method, url.rstrip("/") + path, json=body, headers={"Authorization": f"Bearer {admin_key}"}, timeout=10
        )
    except httpx.HTTPError as e:
        raise RemoteModelError(f"cannot reach the gateway at {url}: {type(e).__name__}") from None
    try:
        payload = r.json()
    except ValueError:
        payload = {}
    if r.status_code >= 400:
        message = payload.get("error", {}).get("message", r.text[:200]) if isinstance(payload, dict) else r.text[:200]
        cls = ConfigError if r.status_code < 500 else RemoteModelError
        raise cls(f"the gateway refused ({r.status_code}): {message}")
    return payload


@threat_app.command("list")
def list_levels(url: UrlOpt = "http://127.0.0.1:8080", admin_key: AdminOpt = None) -> None:
    """The service level and every key above normal or pinned."""
    status = _call("GET", url, admin_key, "/v1/admin/threat")
    console.print(f"service level: [bold]{escape(str(status.get('service_level')))}[/]")
    keys = status.get("keys", {})
    if not keys:
        console.print("no key above normal")
        return
    table = Table()
    for col in ("key", "level", "pinned", "recent warnings"):
        table.add_column(col)
    for key_id, st in sorted(keys.items()):
        table.add_row(escape(key_id), escape(str(st["level"])), str(st["pinned"]), str(st["recent_warnings"]))
    console.print(table)


@threat_app.command("set")
def set_level(
    key_id: Annotated[str, typer.Argument(help="the key's id (bk_<id>_...)")],
    level: Annotated[str, typer.Argument(help="normal, elevated or under_attack")],
    reason: Annotated[str, typer.Option(help="why: kept with the change")] = "",
    url: UrlOpt = "http://127.0.0.1:8080",
    admin_key: AdminOpt = None,
) -> None:
    """Pin a key at a level: it neither rises nor decays on its own until reset."""
    if level not in ("normal", "elevated", "under_attack"):
        raise ConfigError(f"level must be normal, elevated or under_attack, got {level!r}")
    out = _call("PUT", url, admin_key, f"/v1/admin/threat/{key_id}", {"level": level, "reason": reason})
    console.print(f"key {escape(str(out['key_id']))} pinned at {escape(str(out['level']))}")


@threat_app.command("reset")
def reset_level(
    key_id: Annotated[str, typer.Argument(help="the key's id")],
    reason: Annotated[str, typer.Option(help="why: kept with the change")] = "",
    url: UrlOpt = "http://127.0.0.1:8080",
    admin_key: AdminOpt = None,
) -> None:
    """Back to normal and unpinned, its alert history cleared; the monitors watch it afresh."""
    out = _call("PUT", url, admin_key, f"/v1/admin/threat/{key_id}", {"level": None, "reason": reason})
    console.print(f"key {escape(str(out['key_id']))} reset to {escape(str(out['level']))}")
