"""Renderers: HTML (with figures) and JSON."""

from __future__ import annotations

from pathlib import Path

from bastion.reports.render.html import render_html
from bastion.reports.render.json import render_json
from bastion.reports.report import Report

__all__ = ["render_html", "render_json", "write_report"]


def write_report(report: Report, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``index.html`` and ``results.json`` into ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    html_path, json_path = out / "index.html", out / "results.json"
    json_path.write_text(render_json(report))
    html_path.write_text(render_html(report))
    return html_path, json_path
