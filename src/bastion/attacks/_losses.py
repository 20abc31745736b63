"""Per-sample attack objectives (to be maximised by the attacker)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def cross_entropy(logits: Tensor, labels: Tensor, *, targeted: bool) -> Tensor:
    """Untargeted: CE of the true label (push it down). Targeted: minus CE of the target (pull it up)."""
    ce = F.cross_entropy(logits, labels, reduction="none")
    return -ce if targeted else ce


def margin(logits: Tensor, labels: Tensor, *, targeted: bool) -> Tensor:
    """Carlini-Wagner margin: best other logit minus the label's logit (targeted: the reverse)."""
    label_logit = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.scatter(1, labels[:, None], float("-inf"))
    best_other = others.max(1).values
    return label_logit - best_other if targeted else best_other - label_logit


LOSSES = {"ce": cross_entropy, "margin": margin}


def succeeded(pred: Tensor, labels: Tensor, *, targeted: bool) -> Tensor:
    """Whether each prediction counts as a success: the target reached, or the true label left."""
    return pred == labels if targeted else pred != labels


def dlr(logits: Tensor, labels: Tensor, *, targeted: bool) -> Tensor:
    """Difference of Logits Ratio (Croce & Hein 2020): a margin made invariant to the logits' scale and shift.

    Untargeted: ``-(z_y - max_{j!=y} z_j) / (z_pi1 - z_pi3)``. Targeted (``labels`` are the targets):
    ``-(max_{j!=t} z_j - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)``, with ``pi`` the logits sorted in decreasing order.
    It needs 3 classes (4 when targeted) to have a scale; with fewer classes (e.g. a binary classifier) the ratio
    is constant, so the plain margin is used instead, which ranks candidates the same way the DLR would.
    """
    if logits.shape[1] < (4 if targeted else 3):
        return margin(logits, labels, targeted=targeted)
    top = logits.sort(1, descending=True).values
    label_logit = logits.gather(1, labels[:, None]).squeeze(1)
    best_other = logits.scatter(1, labels[:, None], float("-inf")).max(1).values
    if targeted:
        scale = top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12
        return -(best_other - label_logit) / scale
    scale = top[:, 0] - top[:, 2] + 1e-12
    return -(label_logit - best_other) / scale


LOSSES["dlr"] = dlr
