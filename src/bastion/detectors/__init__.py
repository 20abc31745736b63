"""Input detectors: fit on clean data, score each input (higher is more suspicious), flag at a chosen false-positive
rate. One contract (bastion.detectors.base.Detector) and one registry (DETECTORS) over all of them."""

from __future__ import annotations

from bastion.detectors import input as _input  # noqa: F401  (registers the detectors)
from bastion.detectors.base import DETECTORS, Detector, FittedThreshold

__all__ = ["DETECTORS", "Detector", "FittedThreshold"]
