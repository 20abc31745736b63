"""Assessment families: one per threat family, registered in :data:`FAMILIES` (see docs/assess-families.md)."""

from __future__ import annotations

from bastion.assess.families import backdoor as _backdoor  # noqa: F401  (registers the family)
from bastion.assess.families import corruption as _corruption  # noqa: F401
from bastion.assess.families import detection as _detection  # noqa: F401
from bastion.assess.families import evasion as _evasion  # noqa: F401
from bastion.assess.families import extraction as _extraction  # noqa: F401
from bastion.assess.families import inversion as _inversion  # noqa: F401
from bastion.assess.families import membership as _membership  # noqa: F401
from bastion.assess.families import poisoning as _poisoning  # noqa: F401
from bastion.assess.families.base import (
    FAMILIES,
    AssessData,
    Family,
    FamilyResult,
    FamilySettings,
    MetricRow,
    ReportSection,
    TrainingData,
)

__all__ = [
    "FAMILIES",
    "AssessData",
    "Family",
    "FamilyResult",
    "FamilySettings",
    "MetricRow",
    "ReportSection",
    "TrainingData",
]
