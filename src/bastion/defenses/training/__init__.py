"""Training-time hardening: adversarial training (PGD-AT, TRADES, fast-AT) and differentially private training
(DP-SGD on Opacus)."""

from __future__ import annotations

from bastion.defenses.training.adversarial import (
    METHODS,
    AdversarialTraining,
    EpochRecord,
    HardeningResult,
    adversarial_train,
    check_training,
)
from bastion.defenses.training.private import PrivateResult, PrivateTraining, check_private, private_train

__all__ = [
    "METHODS",
    "AdversarialTraining",
    "EpochRecord",
    "HardeningResult",
    "PrivateResult",
    "PrivateTraining",
    "adversarial_train",
    "check_private",
    "check_training",
    "private_train",
]
