"""`bastion drift`'s report: the verdict, the MMD test, the features that moved and, for images, where they are."""

from __future__ import annotations

import base64
import json
import math
from html import escape
from pathlib import Path
from typing import Any

from bastion.detectors.drift import KSResult, MMDResult
from bastion.reports.render.figures import png
from bastion.reports.render.html import _CSS


def drift_summary(
    ks: KSResult, mmd: MMDResult, *, alpha: float, reference: dict[str, Any], current: dict[str, Any]
) -> dict[str, Any]:
    """Everything the report says, as JSON-ready data."""
    drift = mmd.drift(alpha) or ks.drift
    return {
        "verdict": "drift" if drift else "no drift detected",
        "reference": reference,
        "current": current,
        "mmd": {
            "mmd2": mmd.mmd2,
            "p_value": mmd.p_value,
            "permutations": mmd.permutations,
            "bandwidth": mmd.bandwidth,
            "alpha": alpha,
            "drift": mmd.drift(alpha),
        },
        "ks": {
            "fdr": ks.fdr,
            "features": int(ks.statistic.numel()),
            "drifted": int(ks.drifted.sum()),
            "drifted_features": ks.drifted.nonzero().flatten().tolist(),
            "top": [{"feature": i, "statistic": s, "p_value": p} for i, s, p in ks.top(20)],
        },
    }


def _heatmap(ks: KSResult, shape: tuple[int, ...]) -> bytes | None:
    if len(shape) != 3 or math.prod(shape) != ks.statistic.numel():
        return None
    from matplotlib.figure import Figure

    c, h, w = shape
    stat = ks.statistic.reshape(c, h, w).amax(0).numpy()
    fig = Figure(figsize=(4.2, 3.6))
    ax = fig.subplots()
    im = ax.imshow(stat, cmap="magma", vmin=0)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.colorbar(im, ax=ax, label="KS statistic")
    return png(fig)


def write_drift_report(
    summary: dict[str, Any], ks: KSResult, input_shape: tuple[int, ...], out_dir: str | Path
) -> tuple[Path, Path]:
    """``index.html`` and ``results.json`` in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, html_path = out / "results.json", out / "index.html"
    json_path.write_text(json.dumps(summary, indent=2))
    m, k = summary["mmd"], summary["ks"]
    badge = "fail" if summary["verdict"] == "drift" else "pass"
    rows = "".join(
        f"<tr><td class=num>{t['feature']}</td><td class=num>{t['statistic']:.3f}</td>"
        f"<td class=num>{t['p_value']:.2e}</td><td>{'yes' if t['feature'] in k['drifted_features'] else ''}</td></tr>"
        for t in k["top"]
    )
    heat = _heatmap(ks, input_shape)
    figure = (
        f"<figure><img alt='KS statistic per pixel' src='data:image/png;base64,{base64.b64encode(heat).decode()}'>"
        "<figcaption>KS statistic per pixel (max over channels): where the inputs changed.</figcaption></figure>"
        if heat
        else ""
    )
    html_path.write_text(
        f"<!doctype html><html><head><meta charset=utf-8><title>Bastion drift report</title><style>{_CSS}</style>"
        f"</head><body><h1>Input drift</h1><p><span class='badge {badge}'>{escape(summary['verdict'])}</span></p>"
        f"<p>Reference: {escape(str(summary['reference']))}<br>Current: {escape(str(summary['current']))}</p>"
        "<p class=muted>'No drift detected' means neither test found a difference at the chosen levels, not that "
        "the distributions are equal; small samples detect only large changes.</p>"
        f"<h2>MMD two-sample test</h2><p>MMD² {m['mmd2']:.4g}, permutation p-value {m['p_value']:.4g} "
        f"({m['permutations']} permutations, Gaussian kernel width {m['bandwidth']:.3g}); drift at p ≤ {m['alpha']:g}: "
        f"<b>{'yes' if m['drift'] else 'no'}</b>.</p>"
        f"<h2>Per-feature KS tests</h2><p>{k['drifted']} of {k['features']} features moved at a false-discovery "
        f"rate of {k['fdr']:g} (Benjamini-Hochberg).</p>{figure}"
        "<table><tr><th>feature</th><th>KS statistic</th><th>p-value</th><th>moved</th></tr>"
        f"{rows}</table></body></html>"
    )
    return html_path, json_path
