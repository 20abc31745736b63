"""Bastion: secure machine-learning models through their whole life.

The public API is what ``__all__`` lists; everything else is internal and may change. Names are imported on first
use (PEP 562), so ``import bastion`` is cheap and has no side effects: torch, scikit-learn and the rest load only
when a name that needs them is touched.
"""

from __future__ import annotations

import importlib as _importlib
import typing as _typing

from bastion import errors as _errors  # cheap: no third-party imports
from bastion._version import __version__

_WHERE = {
    "ATTACKS": "bastion.attacks",
    "APGD": "bastion.attacks",
    "APGDT": "bastion.attacks",
    "Attack": "bastion.attacks",
    "AttackResult": "bastion.attacks",
    "AutoAttack": "bastion.attacks",
    "CarliniWagnerL2": "bastion.attacks",
    "Cascade": "bastion.attacks",
    "FGSM": "bastion.attacks",
    "HopSkipJump": "bastion.attacks",
    "PGD": "bastion.attacks",
    "SimBA": "bastion.attacks",
    "Square": "bastion.attacks",
    "create_attack": "bastion.attacks",
    "Assessment": "bastion.assess",
    "Policy": "bastion.assess",
    "load_policy": "bastion.assess",
    "parse_policy": "bastion.assess",
    "run_assessment": "bastion.assess",
    "FAMILIES": "bastion.assess.families",
    "DATASETS": "bastion.data",
    "Dataset": "bastion.data",
    "DatasetProvenance": "bastion.data",
    "load_dataset": "bastion.data",
    "Classifier": "bastion.models",
    "DifferentiableClassifier": "bastion.models",
    "HttpClassifier": "bastion.models",
    "OnnxClassifier": "bastion.models",
    "SklearnClassifier": "bastion.models",
    "TorchClassifier": "bastion.models",
    "SpecHints": "bastion.models.formats",
    "load_classifier": "bastion.models.formats",
    "ModelCard": "bastion.models.zoo",
    "load_model": "bastion.models.zoo",
    "save_model": "bastion.models.zoo",
    "train_model": "bastion.models.zoo",
    "Registry": "bastion.registry",
    "SigningKey": "bastion.registry",
    "TrustPolicy": "bastion.registry",
    "scan_file": "bastion.registry",
    "Report": "bastion.reports",
    "build_report": "bastion.reports",
    "write_report": "bastion.reports",
    "ModelSpec": "bastion.types",
    "Norm": "bastion.types",
    "ThreatModel": "bastion.types",
    **{n: "bastion.errors" for n in _errors.__all__},
}

__all__ = [
    "APGD",
    "APGDT",
    "ATTACKS",
    "DATASETS",
    "FAMILIES",
    "FGSM",
    "PGD",
    "ArtifactError",
    "Assessment",
    "Attack",
    "AttackResult",
    "AutoAttack",
    "BastionError",
    "CarliniWagnerL2",
    "Cascade",
    "Classifier",
    "ConfigError",
    "Dataset",
    "DatasetNotFoundError",
    "DatasetProvenance",
    "DifferentiableClassifier",
    "HopSkipJump",
    "HttpClassifier",
    "InputValidationError",
    "IntegrityError",
    "ModelCard",
    "ModelSpec",
    "NoGradientError",
    "Norm",
    "OnnxClassifier",
    "Policy",
    "PolicyError",
    "Registry",
    "RemoteModelError",
    "Report",
    "SigningKey",
    "SimBA",
    "SklearnClassifier",
    "SpecHints",
    "Square",
    "ThreatModel",
    "TorchClassifier",
    "TrustPolicy",
    "UnknownNameError",
    "UnsafeArtifactError",
    "UserError",
    "__version__",
    "build_report",
    "create_attack",
    "load_classifier",
    "load_dataset",
    "load_model",
    "load_policy",
    "parse_policy",
    "run_assessment",
    "save_model",
    "scan_file",
    "train_model",
    "write_report",
]


def __getattr__(name: str) -> _typing.Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'bastion' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return __all__


if _typing.TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from bastion.assess import Assessment, Policy, load_policy, parse_policy, run_assessment
    from bastion.assess.families import FAMILIES
    from bastion.attacks import (
        APGD,
        APGDT,
        ATTACKS,
        FGSM,
        PGD,
        Attack,
        AttackResult,
        AutoAttack,
        CarliniWagnerL2,
        Cascade,
        HopSkipJump,
        SimBA,
        Square,
        create_attack,
    )
    from bastion.data import DATASETS, Dataset, DatasetProvenance, load_dataset
    from bastion.errors import (
        ArtifactError,
        BastionError,
        ConfigError,
        DatasetNotFoundError,
        InputValidationError,
        IntegrityError,
        NoGradientError,
        PolicyError,
        RemoteModelError,
        UnknownNameError,
        UserError,
    )
    from bastion.models import (
        Classifier,
        DifferentiableClassifier,
        HttpClassifier,
        OnnxClassifier,
        SklearnClassifier,
        TorchClassifier,
    )
    from bastion.models.formats import SpecHints, load_classifier
    from bastion.models.zoo import ModelCard, load_model, save_model, train_model
    from bastion.reports import Report, build_report, write_report
    from bastion.types import ModelSpec, Norm, ThreatModel
