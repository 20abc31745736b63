"""BadNets: a small patch stamped on a share of the training inputs, relabelled to the attacker's class.

Paper: Gu, Dolan-Gavitt & Garg, "BadNets: Identifying Vulnerabilities in the Machine Learning Model Supply Chain",
2017. MITRE ATLAS AML.T0020 (poison training data) leading to AML.T0018 (backdoor ML model). A model trained on
the poisoned set answers ``target`` for any input carrying the patch and behaves normally otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from bastion.attacks.poisoning.base import POISONING_ATTACKS, TriggerBackdoor
from bastion.attacks.poisoning.triggers import PatchTrigger


@POISONING_ATTACKS.register("badnets")
@dataclass(frozen=True)
class BadNets(TriggerBackdoor):
    """Patch-trigger backdoor with flipped labels (``trigger``: size, location, pattern)."""

    name: ClassVar[str] = "badnets"
    trigger: PatchTrigger = field(default_factory=PatchTrigger)
