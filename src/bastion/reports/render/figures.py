"""Matplotlib figures for reports, returned as PNG bytes.

Only matplotlib's object-oriented API is used (``Figure``, never ``pyplot``), so importing this module selects no
backend and changes no global state: a user's notebook or GUI backend stays as it was.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from matplotlib.figure import Figure

from bastion.assess.families.evasion import Example


def png(fig: Figure) -> bytes:
    """The figure as PNG bytes (110 dpi, tight), as every report figure is embedded."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def subplots(
    nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float], squeeze: bool = True
) -> tuple[Figure, Any]:
    """``pyplot.subplots`` without pyplot: a standalone figure that is freed when it goes out of scope."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, squeeze=squeeze)


def robustness_curves(attacks: Sequence[dict[str, Any]], clean_accuracy: float) -> bytes:
    """Robust accuracy against eps, one panel per norm (eps scales differ between norms)."""
    norms = sorted({a["norm"] for a in attacks})
    fig, axes = subplots(1, len(norms), figsize=(5.2 * len(norms), 3.8), squeeze=False)
    for ax, norm in zip(axes[0], norms, strict=True):
        for a in (a for a in attacks if a["norm"] == norm):
            eps = [0.0] + [b["eps"] for b in a["budgets"]]
            acc = [clean_accuracy] + [b["robust_accuracy"] for b in a["budgets"]]
            ax.plot(eps, acc, marker="o", label=a["id"])
        ax.axhline(clean_accuracy, color="grey", linestyle="--", linewidth=1, label="clean")
        ax.set_xlabel(f"eps ({norm})")
        ax.set_ylabel("robust accuracy")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_title(f"Robust accuracy vs budget ({norm})")
    return png(fig)


def example_grid(examples: Sequence[Example], class_names: Sequence[str]) -> bytes:
    """One row per attack; each example as three panels: clean input, adversarial input, perturbation."""

    def name(i: int) -> str:
        return class_names[i] if 0 <= i < len(class_names) else str(i)

    attacks = list(dict.fromkeys(ex.attack for ex in examples))
    per_row = max(sum(1 for ex in examples if ex.attack == a) for a in attacks)
    cols = 3 * per_row
    fig, axes = subplots(len(attacks), cols, figsize=(1.25 * cols, 1.75 * len(attacks)), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for r, attack in enumerate(attacks):
        row = [ex for ex in examples if ex.attack == attack]
        for k, ex in enumerate(row):
            x, xa = ex.x.detach().float(), ex.x_adv.detach().float()
            wrong = ex.adv_pred != ex.label
            panels = [
                (x, f"clean: {name(ex.clean_pred)}", "black"),
                (xa, f"adv: {name(ex.adv_pred)}", "red" if wrong else "green"),
                (xa - x, f"{attack}\neps {ex.eps:g}" if k == 0 else "delta", "grey"),
            ]
            for c, (img, title, color) in enumerate(panels):
                ax = axes[r][3 * k + c]
                ax.axis("on")
                ax.set_xticks([])
                ax.set_yticks([])
                if img.dim() == 3 and img.shape[0] in (1, 3):
                    arr = img.permute(1, 2, 0).numpy()
                    if c < 2:
                        ax.imshow(arr[..., 0] if img.shape[0] == 1 else arr.clip(0, 1), cmap="gray", vmin=0, vmax=1)
                    else:
                        m = max(float(abs(arr).max()), 1e-8)
                        ax.imshow(arr.mean(-1), cmap="seismic", vmin=-m, vmax=m)
                else:
                    ax.bar(range(img.numel()), img.flatten().numpy(), color="C3" if c == 2 else "C0")
                ax.set_title(title, fontsize=7, color=color)
    fig.tight_layout()
    return png(fig)


def perturbation_histogram(attacks: Sequence[dict[str, Any]]) -> bytes:
    """Sizes of the successful perturbations, one panel per attack at its showcase budget, on [0, eps]."""
    n = len(attacks)
    fig, axes = subplots(1, n, figsize=(3.4 * n, 2.9), squeeze=False)
    for ax, a in zip(axes[0], attacks, strict=True):
        vals, eps = a["showcase_norms"], float(a["showcase_eps"])
        if vals:
            edges = [eps * i / 20 for i in range(20)] + [eps * 1.001]  # norms at eps carry float rounding
            ax.hist(vals, bins=edges, color="C0")
            ax.axvline(eps, color="grey", linestyle="--", linewidth=1)
        else:
            ax.text(0.5, 0.5, "no successful\nadversarial examples", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlim(0, eps * 1.05)
        ax.set_xlabel(f"{a['norm']} norm of the perturbation")
        ax.set_title(f"{a['id']} at eps {eps:g} (n={len(vals)})", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("inputs")
    fig.tight_layout()
    return png(fig)


def queries_to_success(attacks: Sequence[dict[str, Any]]) -> bytes:
    """For each black-box attack: the share of attacked inputs broken within q queries (log scale)."""
    fig, ax = subplots(figsize=(6.4, 3.6))
    for a in attacks:
        if a.get("white_box", True):
            continue
        show = next((b for b in a["budgets"] if b["eps"] == a["showcase_eps"]), None)
        if show is None:  # that budget was not run
            continue
        n = max(1, show["n_attacked"])
        qs = sorted(a["showcase_success_queries"])
        if not qs:
            continue
        xs = [qs[0], *qs, max(qs) * 1.05]
        ys = [0.0, *[(i + 1) / n for i in range(len(qs))], len(qs) / n]
        ax.step(xs, ys, where="post", label=f"{a['id']} (eps {a['showcase_eps']:g})")
    ax.set_xscale("log")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("queries per input")
    ax.set_ylabel("share of attacked inputs broken")
    ax.set_title("Queries to success (black-box attacks)")
    ax.grid(alpha=0.3, which="both")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    return png(fig)
