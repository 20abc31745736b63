"""Detectors of single adversarial or out-of-distribution inputs."""

from __future__ import annotations

from bastion.detectors.input.mahalanobis import Mahalanobis
from bastion.detectors.input.reconstruction import Reconstruction
from bastion.detectors.input.squeeze import FeatureSqueezing

__all__ = ["FeatureSqueezing", "Mahalanobis", "Reconstruction"]
