"""Suites: several attacks combined into one worst-case evaluation."""

from __future__ import annotations

from bastion.attacks.suites.autoattack import PRESETS, AutoAttack
from bastion.attacks.suites.cascade import Cascade, CascadeResult

__all__ = ["PRESETS", "AutoAttack", "Cascade", "CascadeResult"]
