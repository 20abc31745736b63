"""Evasion attacks: inputs crafted to be misclassified."""

from __future__ import annotations

from bastion.attacks.evasion.apgd import APGD, APGDT
from bastion.attacks.evasion.cw import CarliniWagnerL2
from bastion.attacks.evasion.fgsm import FGSM
from bastion.attacks.evasion.hopskipjump import HopSkipJump
from bastion.attacks.evasion.pgd import PGD
from bastion.attacks.evasion.simba import SimBA
from bastion.attacks.evasion.square import Square

__all__ = ["APGD", "APGDT", "FGSM", "PGD", "CarliniWagnerL2", "HopSkipJump", "SimBA", "Square"]
