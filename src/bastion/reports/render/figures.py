"""Matplotlib figures for reports, returned as PNG bytes (headless Agg backend)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from bastion.assess.runner import Example


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def robustness_curves(attacks: Sequence[dict[str, Any]], clean_accuracy: float) -> bytes:
    """Robust accuracy against eps, one panel per norm (eps scales differ between norms)."""
    norms = sorted({a["norm"] for a in attacks})
    fig, axes = plt.subplots(1, len(norms), figsize=(5.2 * len(norms), 3.8), squeeze=False)
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
    return _png(fig)


def example_grid(examples: Sequence[Example], class_names: Sequence[str]) -> bytes:
    """Each example clean and adversarial, with the model's label for each."""

    def name(i: int) -> str:
        return class_names[i] if 0 <= i < len(class_names) else str(i)

    rows = len(examples)
    fig, axes = plt.subplots(rows, 3, figsize=(6.3, 2.1 * rows), squeeze=False)
    for r, ex in enumerate(examples):
        x, xa = ex.x.detach().float(), ex.x_adv.detach().float()
        panels = [
            (x, f"clean: {name(ex.clean_pred)}\n(true {name(ex.label)})"),
            (xa, f"{ex.attack} eps {ex.eps:g}:\n{name(ex.adv_pred)}"),
            (xa - x, "perturbation"),
        ]
        for c, (img, title) in enumerate(panels):
            ax = axes[r][c]
            if img.dim() == 3:
                if img.shape[0] == 1:
                    cmap = "gray" if c < 2 else "seismic"
                    arr = img[0].numpy()
                    if c < 2:
                        ax.imshow(arr, cmap=cmap, vmin=0.0, vmax=1.0)
                    else:
                        m = max(float(abs(arr).max()), 1e-8)
                        ax.imshow(arr, cmap=cmap, vmin=-m, vmax=m)
                else:
                    ax.imshow(
                        img.permute(1, 2, 0).clamp(0, 1).numpy()
                        if c < 2
                        else (0.5 + img.permute(1, 2, 0)).clamp(0, 1).numpy()
                    )
                ax.set_xticks([])
                ax.set_yticks([])
            else:
                ax.bar(range(img.numel()), img.flatten().numpy(), color="C0" if c < 2 else "C3")
                ax.set_xticks([])
            color = "red" if (c == 1 and ex.adv_pred != ex.label) else "black"
            ax.set_title(title, fontsize=8, color=color)
    fig.tight_layout()
    return _png(fig)


def perturbation_histogram(attacks: Sequence[dict[str, Any]]) -> bytes:
    """Sizes of the successful perturbations of each attack at its showcase budget."""
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    drawn = False
    for a in attacks:
        vals = a["showcase_norms"]
        if vals:
            ax.hist(vals, bins=20, alpha=0.55, label=f"{a['id']} (eps {a['showcase_eps']:g}, n={len(vals)})")
            drawn = True
    if not drawn:
        ax.text(0.5, 0.5, "no successful adversarial examples", ha="center", va="center", transform=ax.transAxes)
    else:
        ax.legend(fontsize=8)
    ax.set_xlabel("perturbation norm (in each attack's own norm)")
    ax.set_ylabel("inputs")
    ax.set_title("Perturbation sizes of successful attacks")
    ax.grid(alpha=0.3)
    return _png(fig)
