"""`bastion intel export | import | list | remove`: threat intelligence as STIX 2.1 bundles, out of and into a
gateway."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from bastion.cli._console import console

intel_app = typer.Typer(
    help="Share what the gateway saw as STIX 2.1, and import other teams' bundles as blocklists.", no_args_is_help=True
)
ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="gateway YAML")]


@intel_app.command("export")
def export(
    config: ConfigOpt = Path("gateway.yaml"),
    out: Annotated[Path, typer.Option("--out", "-o", help="bundle file to write")] = Path("bastion-intel.json"),
    since: Annotated[str, typer.Option(help="start: ISO 8601, Unix seconds, or a span back from now (7d)")] = "7d",
    until: Annotated[str | None, typer.Option(help="end (default: now), same forms")] = None,
    identity: Annotated[str, typer.Option(help="who the bundle says made it")] = "Bastion gateway",
    clients: Annotated[
        str, typer.Option(help="client addresses to share: none, public (globally routable only) or all")
    ] = "none",
) -> None:
    """Write a STIX 2.1 bundle of the period's incidents: ATLAS attack patterns, fingerprints of the inputs behind
    evasion alerts, sightings, reports; client addresses only as --clients allows; never keys or raw inputs."""
    import time

    from bastion.cli.audit import parse_when
    from bastion.errors import InputValidationError
    from bastion.gateway.admin import admin_session
    from bastion.gateway.intel import export_bundle

    if clients not in ("none", "public", "all"):
        raise InputValidationError(f"--clients must be none, public or all, got {clients!r}")
    if not identity.strip() or len(identity) > 200:
        raise InputValidationError("--identity must be 1-200 characters")
    now = time.time()
    start = parse_when(since, now=now, what="--since")
    end = parse_when(until, now=now, what="--until") if until is not None else now
    if not start < end:
        raise InputValidationError(f"--since ({since}) must be before --until ({until or 'now'})")
    with admin_session(config) as h:
        text, summary = export_bundle(h.store, since=start, until=end, identity=identity, clients=clients)  # type: ignore[arg-type]
        h.record("intel_export", str(out))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    console.print(
        f"wrote {out}: {summary['incidents']} incidents, {summary['input_indicators']} input fingerprint(s), "
        f"{summary['client_indicators']} client address(es), techniques {', '.join(summary['attack_patterns']) or 'none'}",
        highlight=False,
    )


@intel_app.command("import")
def import_(
    bundle: Annotated[Path, typer.Argument(help="a STIX 2.1 bundle (JSON)")],
    config: ConfigOpt = Path("gateway.yaml"),
    max_bytes: Annotated[int, typer.Option(min=1, help="refuse larger bundles")] = 16 * 1024 * 1024,
) -> None:
    """Check a bundle and store its indicators: matching inputs and listed clients raise an alert on every replica
    within intel.refresh_s. A bundle with anything malformed or unknown is refused whole."""
    from bastion.errors import InputValidationError
    from bastion.gateway.admin import admin_session
    from bastion.gateway.intel import import_bundle

    if not bundle.is_file():
        raise InputValidationError(f"bundle {bundle} does not exist")
    with admin_session(config) as h:
        try:
            size = bundle.stat().st_size
            if size > max_bytes:  # checked before the file is read
                raise InputValidationError(
                    f"the bundle is {size:,} bytes, over the {max_bytes:,}-byte limit (--max-bytes)"
                )
            summary = import_bundle(h.store, bundle.read_bytes(), max_bytes=max_bytes)
        except InputValidationError:
            h.record("intel_import", str(bundle), status=400)  # a refused import is audited too
            raise
        h.record("intel_import", summary["bundle"])
    skipped = ", ".join(f"{n} {why}" for why, n in summary["skipped"].items()) or "none"
    console.print(
        f"imported bundle {summary['bundle']} from {escape(summary['source'])}: {summary['input_indicators']} input "
        f"fingerprint(s), {summary['client_indicators']} client address(es) ({summary['new']} new, "
        f"{summary['already_imported']} already imported); skipped: {skipped}",
        highlight=False,
    )


@intel_app.command("list")
def list_(config: ConfigOpt = Path("gateway.yaml")) -> None:
    """The imported bundles: who shared each, when, and how many indicators of each kind."""
    import time

    from bastion.gateway.admin import admin_session
    from bastion.gateway.intel import bundle_summary

    with admin_session(config) as h:
        records = h.store.list_indicators()
    table = Table("bundle", "source", "imported", "inputs", "clients")
    for row in bundle_summary(records):
        at = time.strftime("%Y-%m-%d %H:%M", time.gmtime(row["imported_at"]))
        table.add_row(row["bundle"], escape(row["source"]), at, str(row["input"]), str(row["client"]))
    console.print(table)


@intel_app.command("remove")
def remove(
    bundle: Annotated[str, typer.Argument(help="bundle id, as `bastion intel list` shows it")],
    config: ConfigOpt = Path("gateway.yaml"),
) -> None:
    """Remove every indicator an imported bundle brought (a bundle that raises false alarms, say)."""
    from bastion.errors import InputValidationError
    from bastion.gateway.admin import admin_session

    with admin_session(config) as h:
        n = h.store.remove_indicators(bundle)
        h.record("intel_remove", bundle, status=200 if n else 404)
    if not n:
        raise InputValidationError(f"no imported bundle {bundle!r} (see `bastion intel list`)")
    console.print(f"removed {n} indicator(s) of bundle {escape(bundle)}")
