"""Blended backdoor: a whole-input pattern mixed in at a low weight, relabelled to the attacker's class.

Paper: Chen, Liu, Li, Lu & Song, "Targeted Backdoor Attacks on Deep Learning Systems Using Data Poisoning", 2017.
The trigger touches every pixel a little instead of a few pixels a lot, so it is hard to see and has no location
a patch-oriented defense could look at. MITRE ATLAS AML.T0020 / AML.T0018.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from bastion.attacks.poisoning.base import POISONING_ATTACKS, TriggerBackdoor
from bastion.attacks.poisoning.triggers import BlendTrigger


@POISONING_ATTACKS.register("blended")
@dataclass(frozen=True)
class Blended(TriggerBackdoor):
    """Blend-trigger backdoor with flipped labels (``trigger``: alpha, pattern, seed)."""

    name: ClassVar[str] = "blended"
    trigger: BlendTrigger = field(default_factory=BlendTrigger)
