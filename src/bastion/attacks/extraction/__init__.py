"""Model extraction: copying a model through its query API (MITRE ATLAS AML.T0024.002)."""

from __future__ import annotations

from bastion.attacks.extraction import jacobian as _jacobian  # noqa: F401  (registers the strategies)
from bastion.attacks.extraction import knockoff as _knockoff  # noqa: F401
from bastion.attacks.extraction.answers import Knowledge, Targets, query
from bastion.attacks.extraction.base import (
    EXTRACTION_STRATEGIES,
    ExtractionPoint,
    ExtractionResult,
    default_checkpoints,
    extract,
)
from bastion.attacks.extraction.substitute import SubstituteRecipe, train_substitute

__all__ = [
    "EXTRACTION_STRATEGIES",
    "ExtractionPoint",
    "ExtractionResult",
    "Knowledge",
    "SubstituteRecipe",
    "Targets",
    "default_checkpoints",
    "extract",
    "query",
    "train_substitute",
]
