"""Data integrity: validation checks, label errors by confident learning, poison detection over a model's features,
confusion training and the cleaning pipeline with its record."""

from __future__ import annotations

from bastion.defenses.data.cleaning import (
    CHECKS,
    DEFAULT_REMOVE,
    CheckSettings,
    Cleaned,
    CleaningRecord,
    DataCheck,
    check_dataset,
    clean_dataset,
)
from bastion.defenses.data.confusion import ConfusionReport, ConfusionSettings, confusion_training
from bastion.defenses.data.findings import Finding
from bastion.defenses.data.labels import label_issues
from bastion.defenses.data.poison import POISON_DETECTORS, PoisonReport, detect_poison

__all__ = [
    "CHECKS",
    "DEFAULT_REMOVE",
    "POISON_DETECTORS",
    "CheckSettings",
    "Cleaned",
    "CleaningRecord",
    "ConfusionReport",
    "ConfusionSettings",
    "DataCheck",
    "Finding",
    "PoisonReport",
    "check_dataset",
    "clean_dataset",
    "confusion_training",
    "detect_poison",
    "label_issues",
]
