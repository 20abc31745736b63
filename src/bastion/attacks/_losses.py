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
