"""`bastion audit report`: the audit period as one HTML page (with traffic and alert figures) and its JSON."""

from __future__ import annotations

import base64
import json
from html import escape
from pathlib import Path
from typing import Any

from bastion.reports.render.figures import png, subplots
from bastion.reports.render.html import _CSS


def _figure(timeline: dict[str, Any]) -> bytes:
    width = float(timeline["bin_seconds"])
    x = [i * width / 3600 for i in range(len(timeline["answered"]))]
    fig, (top, bottom) = subplots(2, 1, figsize=(7.5, 4.2))
    top.bar(x, timeline["answered"], width=width / 3600, align="edge", label="answered", color="#4c72b0")
    top.bar(
        x,
        timeline["refused"],
        width=width / 3600,
        align="edge",
        bottom=timeline["answered"],
        label="refused",
        color="#dd8452",
    )
    top.set_ylabel("requests")
    top.legend(loc="upper right", fontsize=8)
    bottom.bar(x, timeline["alerts"], width=width / 3600, align="edge", color="#c44e52")
    bottom.set_ylabel("alerts")
    bottom.set_xlabel("hours since the start of the period")
    fig.tight_layout()
    return png(fig)


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    if not rows:
        return "<p class=muted>none</p>"
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{escape(_text(v))}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _text(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, (dict, list)):
        return json.dumps(v, default=str)[:300]
    return str(v)


def write_audit_report(summary: dict[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """``index.html`` and ``results.json`` in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, html_path = out / "results.json", out / "index.html"
    json_path.write_text(json.dumps(summary, indent=2, default=str))
    p, chain, keys = summary["period"], summary["chain"], summary["keys"]
    if chain["intact"]:
        verdict = f"<span class='badge pass'>audit chain intact</span> {chain['verified']} events verified"
    else:
        verdict = (
            f"<span class='badge fail'>audit chain broken at event {chain['broken_at']}</span> that row or the one "
            "before it was edited, deleted or inserted after the fact: nothing after it can be trusted as recorded"
        )
    img = base64.b64encode(_figure(summary["timeline"])).decode()
    incidents = "".join(
        f"<h3>Incident {i['incident_id']}: {escape(i['kind'])} ({escape(i['severity'])}, {escape(i['atlas'])}) — "
        f"{escape(i['status'])}</h3><p>{escape(i['summary'])}; key {escape(str(i['key_id']))}, opened "
        f"{escape(str(i['opened_utc']))}, {i['alerts']} alerts; acknowledged by "
        f"{escape(', '.join(map(str, i['acknowledged_by'])) or '—')}, resolved by "
        f"{escape(', '.join(map(str, i['resolved_by'])) or '—')}</p>"
        + _table(["time (UTC)", "what", "detail"], [[t["time_utc"], t["what"], t["detail"]] for t in i["timeline"]])
        for i in summary["incidents"]
    )
    registry = summary.get("registry")
    registry_html = (
        _table(
            ["created (UTC)", "kind", "name", "version", "signer", "verdict"],
            [
                [a["created_utc"], a["kind"], a["name"], a["version"], a["signer"], a.get("verdict")]
                for a in registry["artifacts"]
            ],
        )
        if registry
        else "<p class=muted>no registry named (--registry)</p>"
    )
    html_path.write_text(
        f"<!doctype html><html><head><meta charset=utf-8><title>Bastion audit report</title><style>{_CSS}</style>"
        f"</head><body><h1>Audit report</h1><p>{escape(p['since_utc'])} to {escape(p['until_utc'])} (UTC): "
        f"{summary['events']} audit events.</p><p>{verdict}</p>"
        f"<figure><img alt='requests and alerts over the period' src='data:image/png;base64,{img}'>"
        "<figcaption>Requests answered and refused, and monitor alerts, over the period.</figcaption></figure>"
        "<h2>Keys</h2><h3>Created</h3>"
        + _table(
            ["key", "name", "scopes", "created (UTC)"],
            [[k["key_id"], k["name"], k["scopes"], k["created_utc"]] for k in keys["created"]],
        )
        + "<h3>Revoked</h3>"
        + _table(
            ["key", "name", "revoked (UTC)"], [[k["key_id"], k["name"], k["revoked_utc"]] for k in keys["revoked"]]
        )
        + "<h3>Traffic</h3>"
        + _table(
            ["key", "name", "answered", "refused", "inputs", "refusals"],
            [
                [
                    a["key_id"],
                    a["name"],
                    a.get("answered", 0),
                    a.get("refused", 0),
                    a["inputs"],
                    {k: v for k, v in a.items() if k.startswith("refused:")},
                ]
                for a in keys["activity"]
            ],
        )
        + "<h2>Incidents</h2>"
        + (incidents or "<p class=muted>none</p>")
        + "<h2>Threat-level changes</h2>"
        + _table(
            ["time (UTC)", "key", "from", "to", "reason", "by"],
            [
                [c["time_utc"], c["key_id"] or "service", c["old"], c["new"], c["reason"], c["actor"]]
                for c in summary["level_changes"]
            ],
        )
        + "<h2>Alerts by MITRE ATLAS technique</h2>"
        + _table(["technique", "alerts"], [[k, v] for k, v in summary["alerts"]["by_atlas"].items()])
        + "<h2>Administrative actions</h2>"
        + _table(
            ["time (UTC)", "action", "by", "target", "status"],
            [[a["time_utc"], a["action"], a["by"], a["target"], a["status"]] for a in summary["admin_actions"]],
        )
        + "<h2>Service events</h2>"
        + _table(
            ["time (UTC)", "event", "detail"],
            [
                [s["time_utc"], s["event"], {k: v for k, v in s.items() if k not in ("time", "time_utc", "event")}]
                for s in summary["service_events"]
            ],
        )
        + "<h2>Registry: artifacts registered and assessments</h2>"
        + registry_html
        + "</body></html>"
    )
    return html_path, json_path
