"""Membership inference by the loss threshold (Yeom, Giacomelli, Fredrikson & Jha, CSF 2018).

A model fits its training points better than points it never saw, so a low loss says "member". Scored over known
members and non-members, the attack's ROC AUC measures how much the model leaks about who was in its training set:
0.5 is chance. The calibrated attacks (LiRA, RMIA) that need reference models are the privacy-attacks issue's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from bastion._torch import batch_slices
from bastion._validate import label_problems, raise_if, tensor_problems
from bastion.errors import InputValidationError


@dataclass(frozen=True)
class MembershipResult:
    """ROC AUC of the loss-threshold attack, its advantage (max TPR - FPR) and the TPR at 1% FPR."""

    auc: float
    advantage: float
    tpr_at_1pct_fpr: float
    members: int
    non_members: int

    def to_dict(self) -> dict[str, str | float | int]:
        return {
            "attack": "loss-threshold",
            "auc": self.auc,
            "advantage": self.advantage,
            "tpr_at_1pct_fpr": self.tpr_at_1pct_fpr,
            "members": self.members,
            "non_members": self.non_members,
        }


def _scores(model: object, x: Tensor, y: Tensor) -> Tensor:
    """Minus the cross-entropy loss, in the order-preserving form that does not saturate: the loss is
    softplus(logsumexp of the other logits - the label's logit), so ranking by the logit margin
    ``z_y - logsumexp(z_others)`` (in float64) ranks exactly as ranking by -loss would in exact arithmetic, while
    float32 losses of confidently right inputs all round to 0 and tie (which made the TPR at low FPR 0)."""
    out = []
    with torch.no_grad():
        for s in batch_slices(x.shape[0], 512):
            z = model.predict_logits(x[s]).double()  # type: ignore[attr-defined]
            label = y[s].unsqueeze(1)
            others = z.scatter(1, label, float("-inf"))
            out.append(z.gather(1, label).squeeze(1) - torch.logsumexp(others, dim=1))
    return torch.cat(out)


def loss_threshold(
    model: object, members: tuple[Tensor, Tensor], non_members: tuple[Tensor, Tensor]
) -> MembershipResult:
    """Score every point by minus its loss (as a logit margin: see ``_scores``) and measure how well that separates ``members`` (training inputs and
    labels) from ``non_members`` (held-out ones); use equally many of each for an AUC that reads as a chance rate."""
    spec = model.spec  # type: ignore[attr-defined]
    for name, (x, y) in (("members", members), ("non_members", non_members)):
        raise_if(
            tensor_problems(x, name=f"{name} x", input_shape=spec.input_shape)
            + label_problems(y, name=f"{name} y", n=int(x.shape[0]), num_classes=spec.num_classes),
            "membership inference data",
        )
        if x.shape[0] < 10:
            raise InputValidationError(f"{name} needs at least 10 points, got {x.shape[0]}")
    from sklearn.metrics import roc_auc_score, roc_curve

    s_in, s_out = _scores(model, *members), _scores(model, *non_members)
    scores = torch.cat([s_in, s_out]).numpy()
    truth = [1] * s_in.shape[0] + [0] * s_out.shape[0]
    fpr, tpr, _ = roc_curve(truth, scores)
    ok = fpr <= 0.01
    return MembershipResult(
        float(roc_auc_score(truth, scores)),
        float((tpr - fpr).max()),
        float(tpr[ok].max()) if bool(ok.any()) else 0.0,
        int(s_in.shape[0]),
        int(s_out.shape[0]),
    )
