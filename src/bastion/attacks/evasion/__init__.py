"""Evasion attacks: inputs crafted to be misclassified."""

from __future__ import annotations

from bastion.attacks.evasion.fgsm import FGSM
from bastion.attacks.evasion.pgd import PGD

__all__ = ["FGSM", "PGD"]
