"""Inference attacks: what a model reveals about its training data."""

from __future__ import annotations

from bastion.attacks.inference.membership import MembershipResult, loss_threshold

__all__ = ["MembershipResult", "loss_threshold"]
