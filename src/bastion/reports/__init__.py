"""Reports: frozen findings and report data, and their renderers."""

from __future__ import annotations

from bastion.reports.render import render_html, render_json, write_report
from bastion.reports.report import Finding, Report, build_report

__all__ = ["Finding", "Report", "build_report", "render_html", "render_json", "write_report"]
