"""Poisoning attacks: backdoors (BadNets, blended, clean-label, adaptive blend) and label flipping, and their
measurement."""

from __future__ import annotations

from bastion.attacks.poisoning import adaptive_blend as _adaptive_blend  # noqa: F401  (registers the attack)
from bastion.attacks.poisoning import badnets as _badnets  # noqa: F401
from bastion.attacks.poisoning import blended as _blended  # noqa: F401
from bastion.attacks.poisoning import clean_label as _clean_label  # noqa: F401
from bastion.attacks.poisoning import label_flip as _label_flip  # noqa: F401
from bastion.attacks.poisoning.adaptive_blend import AdaptiveBlend
from bastion.attacks.poisoning.badnets import BadNets
from bastion.attacks.poisoning.base import POISONING_ATTACKS, PoisonedSet, PoisoningAttack
from bastion.attacks.poisoning.blended import Blended
from bastion.attacks.poisoning.clean_label import CleanLabel
from bastion.attacks.poisoning.evaluate import PoisoningResult, poisoning_attack, success_rate
from bastion.attacks.poisoning.label_flip import LabelFlip
from bastion.attacks.poisoning.triggers import BlendTrigger, PatchTrigger, Trigger

__all__ = [
    "POISONING_ATTACKS",
    "AdaptiveBlend",
    "BadNets",
    "BlendTrigger",
    "Blended",
    "CleanLabel",
    "LabelFlip",
    "PatchTrigger",
    "PoisonedSet",
    "PoisoningAttack",
    "PoisoningResult",
    "Trigger",
    "poisoning_attack",
    "success_rate",
]
