"""A self-contained HTML report: inline CSS, figures embedded as base64 PNG, no external resources."""

from __future__ import annotations

import base64
import json
from html import escape
from typing import Any

from bastion.assess.families import ReportSection
from bastion.reports.render.figures import (
    example_grid,
    perturbation_histogram,
    queries_to_success,
    robustness_curves,
)
from bastion.reports.report import Report, threat_table

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:70rem;color:#1d2330;
line-height:1.45;padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{margin-top:2.2rem;border-bottom:2px solid #e3e6ee;padding-bottom:.2rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.92rem}td,th{border:1px solid #d5d9e3;padding:.3rem .6rem;
text-align:left}th{background:#f3f5f9}td.num{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:.15rem .6rem;border-radius:.8rem;font-weight:600;color:#fff}
.pass{background:#1f8a4c}.fail{background:#c0392b}.inconclusive{background:#c77c02}.nogate{background:#667085}.high{color:#c0392b;font-weight:600}
.medium{color:#c77c02;font-weight:600}.low{color:#1f8a4c}.muted{color:#667085;font-size:.88rem}
figure{margin:1rem 0}figcaption{color:#667085;font-size:.88rem}img{max-width:100%}
code{background:#f3f5f9;padding:.05rem .3rem;border-radius:.2rem}
"""


def _img(png: bytes, alt: str, fig_id: str) -> str:
    data = base64.b64encode(png).decode()
    return f'<img id="{fig_id}" alt="{escape(alt)}" src="data:image/png;base64,{data}">'


def _kv(rows: dict[str, Any]) -> str:
    body = "".join(
        f"<tr><th>{escape(str(k))}</th><td>{escape(v if isinstance(v, str) else json.dumps(v))}</td></tr>"
        for k, v in rows.items()
    )
    return f"<table>{body}</table>"


def fmt(value: float) -> str:
    """How metrics appear in the report (the JSON keeps full precision)."""
    return f"{value:.4f}"


def render_html(report: Report) -> str:
    status = {
        "pass": "<span class='badge pass'>PASSED</span>",
        "fail": "<span class='badge fail'>FAILED</span>",
        "inconclusive": "<span class='badge inconclusive'>INCONCLUSIVE</span>",
    }.get(report.gate, "<span class='badge nogate'>no gate set</span>")
    reasons = ""
    if report.gate_reasons and report.gate != "no gate":
        reasons = "<ul id='gate-reasons'>" + "".join(f"<li>{escape(r)}</li>" for r in report.gate_reasons) + "</ul>"
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{escape(report.title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{escape(report.title)}</h1>",
        f"<p class='muted'>created {escape(report.created)} · Bastion {escape(report.versions.get('bastion', ''))}"
        f" · {report.n_samples} test inputs · policy <code>{escape(str(report.policy.get('name')))}</code></p>",
        f"<p>Policy gate: {status} &nbsp; Clean accuracy: <b>{report.clean_accuracy:.1%}</b> "
        f"<span class='muted'>[{report.clean_accuracy_ci[0]:.1%}, {report.clean_accuracy_ci[1]:.1%}] "
        f"{report.policy.get('confidence', 0.95):.0%} confidence interval</span></p>",
        reasons,
        "<h2>Scorecard</h2>",
        "<p>Robust accuracy is the fraction of all assessed inputs that stay correctly classified under the attack "
        "(an input already misclassified counts as broken); success rate is the fraction of correctly classified "
        "inputs the attack broke. Higher robust accuracy is better.</p>",
        _scorecard(report),
        "<h2>Findings</h2>",
        _findings(report),
        "<h2>Sanity checks</h2>",
        _sanity(report),
    ]
    if report.checks:
        parts += ["<h2>Thresholds</h2>", _checks(report)]
    if report.attacks:  # a policy of other families only (corruption, detection) has no evasion curves
        parts += [
            "<h2>Robust accuracy against budget</h2>",
            "<figure>",
            _img(robustness_curves(report.attacks, report.clean_accuracy), "robust accuracy vs eps", "fig-robustness"),
            "<figcaption>Each point is one attack at one budget eps; the dashed line is clean accuracy.</figcaption>"
            "</figure>",
        ]
    if report.examples:
        parts += [
            "<h2>Clean and adversarial examples</h2><figure>",
            _img(example_grid(report.examples, report.class_names), "clean vs adversarial examples", "fig-examples"),
            "<figcaption>Left: the clean input and the model's label; middle: the adversarial input and the "
            "model's label (red when wrong); right: the perturbation.</figcaption></figure>",
        ]
    for section in report.sections:
        parts += _section(section)
    if report.attacks:
        parts += [
            "<h2>Perturbation sizes</h2><figure>",
            _img(perturbation_histogram(report.attacks), "histogram of perturbation sizes", "fig-perturbations"),
            "<figcaption>Norms of the successful perturbations, per attack, at its showcase budget.</figcaption>"
            "</figure>",
        ]
    parts += [
        *_black_box_section(report),
        "<h2>Threats covered</h2>",
        _threats(report),
        "<h2>Model</h2>",
        _kv({k: v for k, v in report.model.items() if k not in ("versions",)}),
        "<h2>Data provenance</h2>",
        _kv(report.data),
        "<h2>Policy</h2>",
        f"<pre>{escape(json.dumps(report.policy, indent=2))}</pre>",
        "<h2>Timings and versions</h2>",
        _kv({**report.timings, **report.versions}),
        "<p class='muted'>Machine-readable figures: <code>results.json</code> beside this file.</p>",
        "</body></html>",
    ]
    return "\n".join(parts)


def _scorecard(report: Report) -> str:
    head = (
        "<tr><th>attack</th><th>norm</th><th>eps</th><th>robust accuracy</th><th>success rate</th>"
        "<th>median norm</th><th>mean queries</th><th>seconds</th></tr>"
    )
    rows = []
    for a in report.attacks:
        for b in a["budgets"]:
            mark = (
                "" if b.get("complete", True) else " <span class='high' title='stopped early: partial'>(partial)</span>"
            )
            cells = [f"<td>{escape(a['id'])}{mark}</td><td>{escape(a['norm'])}</td><td class='num'>{b['eps']:g}</td>"]
            for metric in ("robust_accuracy", "success_rate", "median_norm", "mean_queries", "seconds"):
                ci = b.get(f"{metric}_ci")
                interval = f" <span class='muted'>[{fmt(ci[0])}, {fmt(ci[1])}]</span>" if ci else ""
                cells.append(
                    f"<td class='num' data-attack='{escape(a['id'])}' data-eps='{b['eps']!r}' "
                    f"data-metric='{metric}'>{fmt(b[metric])}{interval}</td>"
                )
            rows.append("<tr>" + "".join(cells) + "</tr>")
    notes = [
        f"{escape(a['id'])} at eps {b['eps']:g}: "
        + ", ".join(f"{escape(k)} broke {v}" for k, v in b["contributions"].items())
        for a in report.attacks
        for b in a["budgets"]
        if b.get("contributions")
    ]
    suites = f"<p class='muted'>Cascade contributions — {'; '.join(notes)}.</p>" if notes else ""
    return f"<table id='scorecard'>{head}{''.join(rows)}</table>{suites}"


def _findings(report: Report) -> str:
    items = "".join(
        f"<li><span class='{f.severity}'>{f.severity.upper()}</span> — {escape(f.summary)} "
        f"<span class='muted'>({escape(', '.join(f.atlas))}; {escape(f.owasp)})</span></li>"
        for f in report.findings
    )
    return f"<ul>{items}</ul>"


def _checks(report: Report) -> str:
    rows = []
    for c in report.checks:
        est = c.get("estimate") or {}
        ci = f"[{fmt(est['low'])}, {fmt(est['high'])}]" if "k" in est else ""
        rows.append(
            f"<tr><td>{escape(c['rule'])}</td><td class='num'>{fmt(c['value'])}</td><td class='num'>{ci}</td>"
            f"<td><span class='badge {c['status']}'>{escape(c['status'])}</span></td>"
            f"<td class='muted'>{escape(c.get('reason', ''))}</td></tr>"
        )
    head = "<tr><th>rule</th><th>measured</th><th>confidence interval</th><th>result</th><th>why</th></tr>"
    return f"<table id='thresholds'>{head}{''.join(rows)}</table>"


def _section(section: ReportSection) -> list[str]:
    parts = [f"<h2 id='section-{escape(section.id)}'>{escape(section.title)}</h2>"]
    if section.intro:
        parts.append(f"<p>{escape(section.intro)}</p>")
    for head, body in section.tables:
        cells = "".join(f"<th>{escape(h)}</th>" for h in head)
        rows = "".join("<tr>" + "".join(f"<td>{escape(v)}</td>" for v in row) + "</tr>" for row in body)
        parts.append(f"<table><tr>{cells}</tr>{rows}</table>")
    for i, (png, caption) in enumerate(section.figures):
        parts.append(
            f"<figure>{_img(png, caption, f'fig-{section.id}-{i}')}<figcaption>{escape(caption)}</figcaption></figure>"
        )
    return parts


def _threats(report: Report) -> str:
    rows = "".join(
        f"<tr><td>{escape(t['threat'])}</td><td>{escape(', '.join(t['atlas']))}</td><td>{escape(t['owasp'])}</td>"
        f"<td>{escape(', '.join(t['attacks']))}</td></tr>"
        for t in threat_table(report.attacks)
    )
    return (
        f"<table><tr><th>threat</th><th>MITRE ATLAS</th><th>OWASP ML Top 10</th><th>attacks run</th></tr>{rows}</table>"
    )


def _sanity(report: Report) -> str:
    if not report.sanity:
        return (
            "<p id='sanity'>No sign of an unreliable evaluation: gradients are usable, the model answers "
            "consistently, robust accuracy falls with the budget and no black-box attack beats the white-box "
            "ones.</p>"
        )
    items = "".join(
        f"<li><span class='{'high' if f['severity'] == 'error' else 'medium'}'>{escape(f['severity'].upper())}</span>"
        f" ({escape(f['check'])}) — {escape(f['message'])}</li>"
        for f in report.sanity
    )
    return f"<ul id='sanity'>{items}</ul>"


def _black_box_section(report: Report) -> list[str]:
    if all(a.get("white_box", True) for a in report.attacks):
        return []
    partial = [f"{a['id']}: {e}" for a in report.attacks for e in a.get("errors", [])]
    note = ""
    if partial:
        note = (
            "<p class='high'>Some attacks stopped early and their figures are partial: "
            + escape("; ".join(partial))
            + "</p>"
        )
    return [
        "<h2>Queries to success</h2><figure>",
        _img(queries_to_success(report.attacks), "queries to success of black-box attacks", "fig-queries"),
        "<figcaption>Share of the attacked inputs each black-box attack broke within a given number of queries, "
        "at its showcase budget. A gateway that rate-limits or detects probing must act well before the curve "
        "rises.</figcaption></figure>",
        note,
    ]
