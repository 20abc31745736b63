"""The before/after report of `bastion harden`: the same policy on the original and the hardened model, side by side,
with the hardened model's sanity checks (hardening that only masks gradients shows there) and its training curve."""

from __future__ import annotations

import base64
import json
from html import escape
from pathlib import Path
from typing import Any

from bastion.reports.render.figures import png
from bastion.reports.render.html import _CSS
from bastion.reports.report import Report


def _at(at: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in at.items())


def comparison_rows(before: Report, after: Report) -> list[dict[str, Any]]:
    """Every (entry, row, metric) of the two assessments with both values (None where one side lacks it)."""

    def index(rep: Report) -> dict[tuple[str, str, str], dict[str, Any]]:
        out = {}
        for r in rep.rows:
            for m, est in r["metrics"].items():
                out[(r["entry"], json.dumps(r["at"], sort_keys=True), m)] = {**est, "complete": r["complete"]}
        return out

    b, a = index(before), index(after)
    rows = []
    for key in list(dict.fromkeys([*b, *a])):
        entry, at, metric = key
        rows.append(
            {
                "entry": entry,
                "at": json.loads(at),
                "metric": metric,
                "before": b.get(key, {}).get("value"),
                "after": a.get(key, {}).get("value"),
                "complete": bool(b.get(key, {}).get("complete", False) and a.get(key, {}).get("complete", False)),
            }
        )
    return rows


def _curve(history: list[dict[str, Any]]) -> bytes:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 3.2))
    ax = fig.subplots()
    epochs = [h["epoch"] for h in history]
    ax.plot(epochs, [h["clean_accuracy"] for h in history], marker="o", label="clean (held out)")
    ax.plot(epochs, [h["robust_accuracy"] for h in history], marker="o", label="PGD check (held out)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return png(fig)


def write_comparison(before: Report, after: Report, training: dict[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """``index.html`` and ``comparison.json`` in ``out_dir`` (the two full reports go in before/ and after/)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = comparison_rows(before, after)
    data = {
        "format": 1,
        "training": training,
        "clean_accuracy": {"before": before.clean_accuracy, "after": after.clean_accuracy},
        "rows": rows,
        "sanity_after": list(after.sanity),
        "gate": {"before": before.gate, "after": after.gate},
    }
    json_path, html_path = out / "comparison.json", out / "index.html"
    json_path.write_text(json.dumps(data, indent=1))

    def fmt(v: float | None) -> str:
        return "—" if v is None else f"{v:.1%}" if 0 <= v <= 1 else f"{v:.4g}"

    body = "".join(
        f"<tr><td>{escape(r['entry'])}</td><td>{escape(_at(r['at']))}</td><td>{escape(r['metric'])}</td>"
        f"<td class=num>{fmt(r['before'])}</td><td class=num>{fmt(r['after'])}</td>"
        f"<td>{'' if r['complete'] else 'partial: not a verdict'}</td></tr>"
        for r in rows
    )
    errors = [f for f in after.sanity if f.get("severity") == "error"]
    sanity = (
        "<p class=high>The hardened model's evaluation is NOT reliable — its robust accuracy may come from masked "
        "gradients, not robustness:</p><ul>"
        + "".join(f"<li>{escape(f['check'])}: {escape(f['message'])}</li>" for f in after.sanity)
        + "</ul>"
        if errors
        else "<p>The hardened model passed the sanity checks (usable gradients, consistent answers, robust accuracy "
        "falling with the budget, no black-box attack beating the white-box ones).</p>"
        + (
            "<ul>" + "".join(f"<li>{escape(f['check'])}: {escape(f['message'])}</li>" for f in after.sanity) + "</ul>"
            if after.sanity
            else ""
        )
    )
    hist = [h for h in training.get("history") or [] if "robust_accuracy" in h]
    privacy = training.get("privacy")
    privacy_html = (
        "<h2>Privacy budget</h2><table>"
        + "".join(f"<tr><th>{escape(str(k))}</th><td>{escape(str(v))}</td></tr>" for k, v in privacy.items())
        + "</table><p class=muted>(epsilon, delta)-differential privacy of the training data, as the accountant "
        "computed it for these settings; the robustness figures above are not what DP-SGD promises.</p>"
        if privacy
        else ""
    )
    mia = training.get("membership_inference")
    mia_html = (
        "<h2>Membership inference (loss threshold)</h2><table><tr><th></th><th>AUC</th><th>advantage</th>"
        "<th>TPR at 1% FPR</th></tr>"
        + "".join(
            f"<tr><td>{side}</td><td class=num>{mia[side]['auc']:.3f}</td><td class=num>{mia[side]['advantage']:.3f}"
            f"</td><td class=num>{mia[side]['tpr_at_1pct_fpr']:.3f}</td></tr>"
            for side in ("before", "after")
        )
        + f"</table><p class=muted>{mia['before']['members']} training inputs against as many test inputs; an AUC of "
        "0.5 is chance: the attacker cannot tell who was in the training set by the model's loss (Yeom et al. "
        "2018). The calibrated attacks (LiRA, RMIA) are stronger.</p>"
        if mia
        else ""
    )
    figure = (
        f"<figure><img alt='training curve' src='data:image/png;base64,{base64.b64encode(_curve(hist)).decode()}'>"
        "<figcaption>Accuracy on the held-out check inputs after each epoch; the best PGD check's weights were "
        "kept.</figcaption></figure>"
        if hist
        else ""
    )
    notes = "".join(f"<li>{escape(n)}</li>" for n in training.get("notes", []))
    settings = escape(json.dumps(training.get("settings", {}), indent=1))
    html_path.write_text(
        f"<!doctype html><html><head><meta charset=utf-8><title>Bastion hardening report</title><style>{_CSS}"
        "</style></head><body>"
        f"<h1>Hardening: {escape(str(training.get('method', '')))}</h1>"
        f"<p>Clean accuracy {fmt(before.clean_accuracy)} before, {fmt(after.clean_accuracy)} after, on "
        f"{after.n_samples} test inputs. Full reports: <a href='before/index.html'>before</a>, "
        f"<a href='after/index.html'>after</a>.</p>"
        f"{'<ul>' + notes + '</ul>' if notes else ''}"
        "<h2>Before and after, the same policy</h2><table><tr><th>entry</th><th>at</th><th>metric</th>"
        f"<th>before</th><th>after</th><th></th></tr>{body}</table>"
        f"<h2>Sanity checks on the hardened model</h2>{sanity}{privacy_html}{mia_html}"
        f"<h2>Training</h2>{figure}<pre>{settings}</pre>"
        "</body></html>"
    )
    return html_path, json_path
