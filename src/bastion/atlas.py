"""The MITRE ATLAS techniques Bastion names, with their names as ATLAS gives them.

Alerts, incidents, assessment families and threat-intelligence exports cite techniques by id; this table is what a
cited id is checked against and where its name and page come from. Transcribed from ATLAS data release 5.6.0
(mitre-atlas/atlas-data, dist/ATLAS.yaml); a newer release may rename a technique but keeps its id.
"""

from __future__ import annotations

import re

VERSION = "5.6.0"
SOURCE = "mitre-atlas"

TECHNIQUES: dict[str, str] = {
    "AML.T0005": "Create Proxy AI Model",
    "AML.T0010": "AI Supply Chain Compromise",
    "AML.T0011": "User Execution",
    "AML.T0011.000": "Unsafe AI Artifacts",
    "AML.T0012": "Valid Accounts",
    "AML.T0015": "Evade AI Model",
    "AML.T0018": "Manipulate AI Model",
    "AML.T0020": "Poison Training Data",
    "AML.T0024": "Exfiltration via AI Inference API",
    "AML.T0024.000": "Infer Training Data Membership",
    "AML.T0024.001": "Invert AI Model",
    "AML.T0024.002": "Extract AI Model",
    "AML.T0029": "Denial of AI Service",
    "AML.T0034": "Cost Harvesting",
    "AML.T0040": "AI Model Inference API Access",
    "AML.T0042": "Verify Attack",
    "AML.T0043": "Craft Adversarial Data",
    "AML.T0043.000": "White-Box Optimization",
    "AML.T0043.001": "Black-Box Optimization",
}

_ID = re.compile(r"AML\.T\d{4}(\.\d{3})?")


def is_technique_id(text: str) -> bool:
    """Whether ``text`` has the form of an ATLAS technique id (``AML.T0043``, ``AML.T0024.002``)."""
    return bool(_ID.fullmatch(text))


def technique_name(technique: str) -> str:
    """The technique's ATLAS name (the id itself when this table does not know it)."""
    return TECHNIQUES.get(technique, technique)


def technique_url(technique: str) -> str:
    """The technique's page on atlas.mitre.org."""
    return f"https://atlas.mitre.org/techniques/{technique}"
