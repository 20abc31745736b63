"""Bastion: secure machine-learning models through their whole life.

The public API is what ``__all__`` lists; everything else is internal and may change.
"""

from __future__ import annotations

from bastion._version import __version__
from bastion.assess import Assessment, Policy, load_policy, parse_policy, run_assessment
from bastion.attacks import ATTACKS, FGSM, PGD, Attack, AttackResult, create_attack
from bastion.data import DATASETS, Dataset, DatasetProvenance, load_dataset
from bastion.errors import (
    ArtifactError,
    BastionError,
    ConfigError,
    DatasetNotFoundError,
    InputValidationError,
    IntegrityError,
    PolicyError,
    RemoteModelError,
    UnknownNameError,
    UserError,
)
from bastion.models import (
    Classifier,
    DifferentiableClassifier,
    HttpClassifier,
    ModelSpec,
    SklearnClassifier,
    TorchClassifier,
)
from bastion.models.zoo import ModelCard, load_model, save_model, train_model
from bastion.reports import Report, build_report, write_report
from bastion.types import Norm, ThreatModel

__all__ = [
    "ATTACKS",
    "DATASETS",
    "FGSM",
    "PGD",
    "ArtifactError",
    "Assessment",
    "Attack",
    "AttackResult",
    "BastionError",
    "Classifier",
    "ConfigError",
    "Dataset",
    "DatasetNotFoundError",
    "DatasetProvenance",
    "DifferentiableClassifier",
    "HttpClassifier",
    "InputValidationError",
    "IntegrityError",
    "ModelCard",
    "ModelSpec",
    "Norm",
    "Policy",
    "PolicyError",
    "RemoteModelError",
    "Report",
    "SklearnClassifier",
    "ThreatModel",
    "TorchClassifier",
    "UnknownNameError",
    "UserError",
    "__version__",
    "build_report",
    "create_attack",
    "load_dataset",
    "load_model",
    "load_policy",
    "parse_policy",
    "run_assessment",
    "save_model",
    "train_model",
    "write_report",
]
