"""`bastion data check`'s report: the verdict, every finding, the poison detector's view per class, and the
samples each removable finding points at (for image data), so a person can see what cleaning would take out."""

from __future__ import annotations

import base64
import json
from html import escape
from pathlib import Path
from typing import Any

from torch import Tensor

from bastion.reports.render.figures import png, subplots
from bastion.reports.render.html import _CSS


def _img(data: bytes, alt: str, caption: str) -> str:
    return (
        f"<figure><img alt='{escape(alt)}' src='data:image/png;base64,{base64.b64encode(data).decode()}'>"
        f"<figcaption>{escape(caption)}</figcaption></figure>"
    )


def _class_bars(
    classes: Any, values: list[float], line: float, legend: str, ylabel: str, class_names: tuple[str, ...]
) -> bytes:
    """One bar per class (red where judged attacked) against the decision line."""
    fig, ax = subplots(figsize=(6.0, 3.0))
    labels = [class_names[c.label] if c.label < len(class_names) else str(c.label) for c in classes]
    ax.bar(range(len(classes)), values, color=["#c0392b" if c.attacked else "#7f8c8d" for c in classes])
    ax.axhline(line, color="k", ls="--", lw=0.8, label=legend)
    ax.set_xticks(range(len(classes)))
    ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=7)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    return png(fig)


def _gap_plot(check: Any, class_names: tuple[str, ...]) -> bytes | None:
    if check.poison is None or not check.poison.classes:
        return None
    p = check.poison
    gaps = [c.gap for c in p.classes]
    return _class_bars(
        p.classes, gaps, p.gap_threshold, f"threshold {p.gap_threshold:g}", "gap (robust SDs)", class_names
    )


def _fitted_plot(check: Any, class_names: tuple[str, ...]) -> bytes | None:
    """Share of each class the confused model still fits, against the share that marks a class attacked."""
    if check.confusion is None or not check.confusion.classes:
        return None
    c = check.confusion
    floor = float(c.settings.get("min_share", 0.01))
    shares = [k.share for k in c.classes]
    return _class_bars(c.classes, shares, floor, f"attacked from {floor:.0%}", "share still fitted", class_names)


def _grid(x: Tensor, indices: tuple[int, ...], labels: Tensor, class_names: tuple[str, ...]) -> bytes | None:
    if x.dim() != 4 or x.shape[1] not in (1, 3) or not indices:
        return None
    show = list(indices[:16])
    cols = min(8, len(show))
    rows = (len(show) + cols - 1) // cols
    fig, axes = subplots(rows, cols, figsize=(1.1 * cols, 1.25 * rows), squeeze=False)
    lo, hi = float(x.min()), float(x.max())
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k >= len(show):
            continue
        img = x[show[k]]
        img = (img - lo) / max(hi - lo, 1e-12)
        ax.imshow(img[0].numpy() if img.shape[0] == 1 else img.permute(1, 2, 0).numpy(), cmap="gray", vmin=0, vmax=1)
        lab = int(labels[show[k]])
        ax.set_title(f"#{show[k]} {class_names[lab] if lab < len(class_names) else lab}"[:14], fontsize=6)
    return png(fig)


def write_data_report(check: Any, x: Tensor, y: Tensor, spec: Any, out: str | Path) -> Path:
    """The HTML report of a :class:`~bastion.defenses.data.DataCheck` at ``out`` (a file path)."""
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = tuple(spec.class_names or tuple(str(i) for i in range(spec.num_classes)))
    d = check.to_dict()
    badge = "fail" if check.verdict != "clean" else "pass"
    rows = "".join(
        f"<tr><td>{escape(f.check)}</td><td>{escape(f.severity)}</td><td class=num>{f.count}</td>"
        f"<td>{'yes' if f.removable else ''}</td><td>{escape(f.message)}</td></tr>"
        for f in check.findings
    )
    parts = []
    gap = _gap_plot(check, names)
    if gap is not None:
        parts.append(
            "<h2>Poison detection</h2>"
            f"<p>Features: {escape(check.features_from)}. Detector: {escape(check.poison.detector)}. A class is judged "
            "attacked when its samples split into a majority and a minority with an empty band of at least the "
            "threshold between them, in robust standard deviations of the majority. No band is not proof of clean "
            "data: an adaptive poisoner who hides the trigger among correctly labelled cover samples (Qi et al. 2023) "
            "leaves none; confusion training (below) is the check built for that case (docs/data-integrity.md).</p>"
            + _img(gap, "gap per class", "Gap per class (red: judged attacked).")
        )
    fitted = _fitted_plot(check, names)
    if fitted is not None:
        c = check.confusion
        steps = ", ".join(f"{f['steps']}{' (stopped)' if f['stopped_early'] else ''}" for f in c.folds)
        verdict = "" if c.conclusive else " <b>Inconclusive: the model could not be confused.</b>"
        parts.append(
            "<h2>Confusion training</h2>"
            f"<p>Trusted rows: {escape(check.trusted_from)}. The model was trained on each half of the rows while "
            "trained ten times as hard on the trusted rows under random wrong labels, which leaves it answering about "
            "1/C for anything that looks like clean data; a row it still answers with its own label with probability "
            f"{c.threshold:.2f} or more is fitted, and the rows of the other half were scored; in a class judged "
            f"attacked every row from {c.attacked_threshold:.2f} is flagged. Steps per fold: "
            f"{escape(steps)}; held-out trusted rows fitted at the checkpoints used: {c.false_rate:.2%} (the "
            f"false-positive rate on clean data).{verdict}</p>"
            + _img(
                fitted, "share fitted per class", "Share of each class the confused model still fits (red: attacked)."
            )
        )
    for f in check.findings:
        if f.removable and f.indices:
            grid = _grid(x, f.indices, y, names)
            if grid is not None:
                parts.append(
                    f"<h3>{escape(f.check)}: the first {min(16, f.count)} of {f.count}</h3>"
                    + _img(grid, f.check, "Index and given label of each sample, most suspicious first.")
                )
    ds = d["dataset"]
    html = (
        f"<!doctype html><html><head><meta charset=utf-8><title>Bastion data check</title><style>{_CSS}</style>"
        f"</head><body><h1>Data check: {escape(str(ds['name']))}</h1><p><span class='badge {badge}'>"
        f"{escape(check.verdict)}</span></p><p>{ds['rows']} rows ({escape(str(ds['split']))} split), sha256 "
        f"<code>{escape(str(ds['sha256']))}</code>.</p>"
        "<table><tr><th>check</th><th>severity</th><th>rows</th><th>removable</th><th>finding</th></tr>"
        f"{rows}</table>{''.join(parts)}"
        f"<h2>Settings</h2><pre>{escape(json.dumps(d['settings'], indent=1))}</pre>"
        f"<p class=muted>Seconds per check: {escape(json.dumps(d['seconds']))}</p></body></html>"
    )
    path.write_text(html)
    return path
