"""Inference attacks: what a model reveals about its training data."""

from __future__ import annotations

from bastion.attacks.inference import lira as _lira  # noqa: F401  (registers the attacks)
from bastion.attacks.inference import rmia as _rmia  # noqa: F401
from bastion.attacks.inference.membership import (
    MEMBERSHIP_ATTACKS,
    MembershipReport,
    MembershipResult,
    loss_threshold,
    membership_inference,
)
from bastion.attacks.inference.reference import Recipe, ReferenceModels, train_references

__all__ = [
    "MEMBERSHIP_ATTACKS",
    "MembershipReport",
    "MembershipResult",
    "Recipe",
    "ReferenceModels",
    "loss_threshold",
    "membership_inference",
    "train_references",
]
