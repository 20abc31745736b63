"""Checks that flag an unreliable robustness evaluation (the symptoms of gradient masking and randomness).

A model can look robust because the attacks failed to work, not because it is robust: gradients that vanish or
shatter, outputs that change from one query to the next, or a defence that only confuses gradient-based attacks.
These checks look for the symptoms listed by Athalye, Carlini & Wagner (ICML 2018) and Carlini et al., "On
Evaluating Adversarial Robustness" (2019), and say what to do about each.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from bastion.models.base import Classifier, DifferentiableClassifier

Severity = Literal["warning", "error"]


@dataclass(frozen=True)
class SanityFlag:
    """One reason to distrust an evaluation, with its evidence and the remedy."""

    check: str
    severity: Severity
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"check": self.check, "severity": self.severity, "message": self.message, "evidence": self.evidence}


@dataclass(frozen=True)
class BudgetFigure:
    """The figures sanity checks need from one attack at one budget."""

    attack: str
    norm: str
    eps: float
    robust_accuracy: float
    white_box: bool


def check_gradients(model: Classifier, x: Tensor, y: Tensor, *, tiny: float = 1e-12) -> list[SanityFlag]:
    """Flag inputs whose loss gradient is zero, vanishing or not finite (gradient masking or saturation)."""
    if not isinstance(model, DifferentiableClassifier):
        return []
    xs = x.detach().to(model.device).requires_grad_(True)
    loss = F.cross_entropy(model.logits(xs), y.to(model.device), reduction="sum")
    (grad,) = torch.autograd.grad(loss, xs)
    norms = grad.flatten(1).norm(dim=1)
    bad_finite = ~torch.isfinite(norms)
    vanishing = (norms < tiny) & ~bad_finite
    flags = []
    if bool(bad_finite.any()):
        flags.append(
            SanityFlag(
                "gradients",
                "error",
                f"{int(bad_finite.sum())} of {len(norms)} inputs have NaN or infinite input gradients: gradient-based "
                "results are meaningless; fix the model's numerics or rely on black-box attacks",
                {"non_finite": int(bad_finite.sum()), "n": len(norms)},
            )
        )
    frac = float(vanishing.float().mean()) if norms.numel() else 0.0
    if frac > 0.1:
        flags.append(
            SanityFlag(
                "gradients",
                "error" if frac > 0.5 else "warning",  # most gradients gone: the white-box figures mean nothing
                f"{frac:.0%} of inputs have a vanishing input gradient (norm < {tiny:g}): white-box attacks cannot make "
                "progress there, which looks like robustness but is not; check black-box attacks (Square, "
                "HopSkipJump) and the margin or DLR losses",
                {"vanishing_fraction": frac, "n": len(norms)},
            )
        )
    return flags


def check_degenerate(predictions: Tensor, labels: Tensor, *, share: float = 0.99) -> list[SanityFlag]:
    """Flag a model that answers one class for (nearly) every input while the inputs hold several: an attack cannot
    move it off that class, so every robust accuracy equals its clean accuracy and looks like perfect robustness.
    (A model trained too briefly, or with too much DP noise, collapses so.) A constant answer that is never right is
    left to the attacks' own "nothing to attack" (no correct input, no robust accuracy to mistake)."""
    n = int(predictions.numel())
    if n < 10 or int(labels.unique().numel()) < 2:
        return []
    counts = torch.bincount(predictions.flatten().long())
    top = int(counts.argmax())
    frac = float(counts[top]) / n
    label_frac = float((labels == top).float().mean())
    if frac < share or label_frac >= share or label_frac == 0:
        return []
    return [
        SanityFlag(
            "degenerate",
            "error",
            f"the model answers class {top} for {frac:.0%} of the {n} assessed inputs, of which only {label_frac:.0%} "
            "are that class: attacks cannot change a constant answer, so its robust accuracy says nothing; train it "
            "until it separates the classes (more epochs, or a larger privacy budget for DP-SGD) and assess again",
            {"class": top, "share": frac, "label_share": label_frac, "n": n},
        )
    ]


def check_randomness(model: Classifier, x: Tensor, *, repeats: int = 3, atol: float = 1e-5) -> list[SanityFlag]:
    """Flag a model whose scores differ between identical queries (randomised defences need EOT attacks)."""
    with torch.no_grad():
        first = model.predict_logits(x)
        worst = 0.0
        label_changes = 0
        for _ in range(repeats - 1):
            again = model.predict_logits(x)
            worst = max(worst, float((again - first).abs().max()))
            label_changes = max(label_changes, int((again.argmax(1) != first.argmax(1)).sum()))
    if worst <= atol:
        return []
    return [
        SanityFlag(
            "randomness",
            "error",
            f"the model answers the same input differently (largest score change {worst:.3g}, up to {label_changes} "
            "labels changed): attacks see a moving target; evaluate with expectation over transformation (average "
            "gradients and decisions over many queries) before trusting the robust accuracy",
            {"max_score_change": worst, "label_changes": label_changes, "repeats": repeats},
        )
    ]


def check_monotonic(figures: Sequence[BudgetFigure], *, tolerance: float = 0.01) -> list[SanityFlag]:
    """Flag an attack whose robust accuracy rises with a larger budget (a larger ball contains the smaller)."""
    flags = []
    by_attack: dict[str, list[BudgetFigure]] = {}
    for f in figures:
        by_attack.setdefault(f.attack, []).append(f)
    for attack, rows in by_attack.items():
        rows = sorted(rows, key=lambda r: r.eps)
        for a, b in itertools.pairwise(rows):
            if b.robust_accuracy > a.robust_accuracy + tolerance:
                flags.append(
                    SanityFlag(
                        "monotonic",
                        "warning",
                        f"{attack}: robust accuracy rises from {a.robust_accuracy:.1%} at eps {a.eps:g} to "
                        f"{b.robust_accuracy:.1%} at eps {b.eps:g}; a larger budget can only help the attacker, so the "
                        "attack is not converging (more steps, restarts or another loss)",
                        {
                            "attack": attack,
                            "eps": [a.eps, b.eps],
                            "robust_accuracy": [a.robust_accuracy, b.robust_accuracy],
                        },
                    )
                )
    return flags


def check_black_box_beats_white_box(
    figures: Sequence[BudgetFigure], *, tolerance: float = 0.01, masking_gap: float = 0.05
) -> list[SanityFlag]:
    """Flag budgets where a black-box attack does better than every white-box one: a sign of gradient masking.

    The flag is an error (masking) when the black-box attack leaves more than ``masking_gap`` less robust accuracy;
    a smaller gap is a warning that the white-box attack did not converge (more steps or restarts)."""
    flags = []
    keys = {(f.norm, round(f.eps, 12)) for f in figures}
    for norm, eps in sorted(keys):
        here = [f for f in figures if f.norm == norm and round(f.eps, 12) == eps]
        white = [f for f in here if f.white_box]
        black = [f for f in here if not f.white_box]
        if not white or not black:
            continue
        best_white = min(white, key=lambda f: f.robust_accuracy)
        best_black = min(black, key=lambda f: f.robust_accuracy)
        gap = best_white.robust_accuracy - best_black.robust_accuracy
        if gap > tolerance:
            # a large gap is the signature of masked gradients; a small one of a white-box attack that has not
            # converged (more steps or restarts), which is worth a warning but does not void the evaluation
            masking = gap > masking_gap
            flags.append(
                SanityFlag(
                    "black-beats-white",
                    "error" if masking else "warning",
                    f"at {norm} eps {eps:g} the black-box {best_black.attack} leaves {best_black.robust_accuracy:.1%} "
                    f"robust accuracy but the best white-box attack ({best_white.attack}) {best_white.robust_accuracy:.1%}: "
                    "with full access the white-box attacks should win, so gradients are probably masked; report the "
                    "black-box figure and do not trust the white-box ones",
                    {
                        "norm": norm,
                        "eps": eps,
                        "black_box": best_black.attack,
                        "white_box": best_white.attack,
                        "robust_accuracy": [best_black.robust_accuracy, best_white.robust_accuracy],
                    },
                )
            )
    return flags
