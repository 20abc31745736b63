"""`bastion audit export | verify | report`: the gateway's audit log as JSON lines, its chain checked, a period's
report for an auditor."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bastion.cli._console import console

audit_app = typer.Typer(help="Export, verify and report on the gateway's audit log.", no_args_is_help=True)


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


def parse_when(text: str, *, now: float, what: str) -> float:
    """An ISO 8601 time (UTC when it names no zone), Unix seconds, or a span back from now: 30m, 24h, 7d."""
    import re
    from datetime import UTC, datetime

    from bastion.errors import InputValidationError

    t = text.strip()
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", t)
    if m:
        return now - float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    try:
        return float(t)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(t)
    except ValueError:
        raise InputValidationError(
            f"{what} {text!r} is not a time: give ISO 8601 (2026-12-01T09:00), Unix seconds, or a span back from now "
            "(30m, 24h, 7d)"
        ) from None
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


@audit_app.command("report")
def report(
    config: Annotated[Path, typer.Option("--config", "-c", help="gateway YAML")] = Path("gateway.yaml"),
    since: Annotated[str, typer.Option(help="start: ISO 8601, Unix seconds, or a span back from now (24h)")] = "24h",
    until: Annotated[str | None, typer.Option(help="end (default: now), same forms")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="report folder")] = Path("audit-report"),
    registry: Annotated[
        Path | None, typer.Option(help="also list artifacts registered in the period (default: the gateway's registry)")
    ] = None,
) -> None:
    """Write an auditor's report of the period (index.html, results.json): keys created, revoked and their traffic,
    incidents with their timelines, threat-level changes, alerts by MITRE ATLAS technique, admin actions, registry
    changes with assessment verdicts, and the audit chain's verification. Exit 1 when the chain is broken."""
    import time

    from bastion.errors import InputValidationError
    from bastion.gateway.admin import admin_session
    from bastion.gateway.audit_period import Period, period_summary
    from bastion.gateway.config import load_config
    from bastion.reports.audit import write_audit_report

    now = time.time()
    start = parse_when(since, now=now, what="--since")
    end = parse_when(until, now=now, what="--until") if until is not None else now
    if not start < end:
        raise InputValidationError(f"--since ({since}) must be before --until ({until or 'now'})")
    cfg = load_config(config)
    root = registry if registry is not None else (cfg.registry.path if cfg.registry is not None else None)
    if root is not None and not Path(root).is_dir():
        raise InputValidationError(f"registry {root} does not exist; give the folder `bastion registry init` made")
    with admin_session(config) as h:
        summary = period_summary(h.store, Period(start, end), registry=root)
    html_path, _ = write_audit_report(summary, out)
    c = summary["chain"]
    console.print(
        f"{summary['events']} events, {len(summary['incidents'])} incidents, {len(summary['level_changes'])} level "
        f"changes, {len(summary['admin_actions'])} admin actions in the period; report: {html_path}",
        highlight=False,
    )
    if not c["intact"]:
        console.print(f"[red]audit chain broken at event {c['broken_at']}[/]: see the report")
        raise typer.Exit(1)
    console.print(f"audit chain intact: {c['verified']} events verified")
