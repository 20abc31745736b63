"""Input transformations applied before the model: squeezers that remove what adversarial perturbations need."""

from __future__ import annotations

from bastion.defenses.preprocessing.squeeze import BitDepth, MedianFilter, Squeezer

__all__ = ["BitDepth", "MedianFilter", "Squeezer"]
