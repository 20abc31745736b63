"""Training-time hardening: adversarial training (PGD-AT, TRADES, fast-AT)."""

from __future__ import annotations

from bastion.defenses.training.adversarial import (
    METHODS,
    AdversarialTraining,
    EpochRecord,
    HardeningResult,
    adversarial_train,
    check_training,
)

__all__ = ["METHODS", "AdversarialTraining", "EpochRecord", "HardeningResult", "adversarial_train", "check_training"]
