"""Serve-time output transforms: what a client is allowed to see of the model's probabilities."""

from __future__ import annotations

from bastion.defenses.postprocessing.base import (
    POSTPROCESSORS,
    Chain,
    Postprocessor,
    Release,
    create_chain,
    create_postprocessor,
)
from bastion.defenses.postprocessing.label_only import LabelOnly
from bastion.defenses.postprocessing.noise import CalibratedNoise
from bastion.defenses.postprocessing.reverse_sigmoid import ReverseSigmoid
from bastion.defenses.postprocessing.rounding import Rounding
from bastion.defenses.postprocessing.top_k import TopK

__all__ = [
    "POSTPROCESSORS",
    "CalibratedNoise",
    "Chain",
    "LabelOnly",
    "Postprocessor",
    "Release",
    "ReverseSigmoid",
    "Rounding",
    "TopK",
    "create_chain",
    "create_postprocessor",
]
