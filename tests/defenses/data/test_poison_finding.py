"""A class that comes close to the gap threshold is a warning, never a clean bill; a quiet data set is info."""

from __future__ import annotations

import torch

from bastion.defenses.data.cleaning import _poison_finding
from bastion.defenses.data.poison import ClassVerdict, PoisonReport
from bastion.types import ModelSpec

SPEC = ModelSpec(input_shape=(1, 8, 8), num_classes=2, bounds=(0.0, 1.0))


def _report(gap: float) -> PoisonReport:
    classes = (ClassVerdict(0, 100, gap, 1.0, False, 0), ClassVerdict(1, 100, 0.5, 0.0, False, 0))
    return PoisonReport("projection-gap", 3.0, classes, torch.zeros(200, dtype=torch.bool), torch.zeros(200))


def test_near_threshold_gap_is_a_warning() -> None:
    near = _poison_finding(_report(2.99), SPEC)
    assert near.severity == "warning" and "comes close (gap 2.99)" in near.message and not near.removable
    quiet = _poison_finding(_report(1.2), SPEC)
    assert quiet.severity == "info" and "no class looks attacked" in quiet.message
