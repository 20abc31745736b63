"""Where a served model comes from: files named in the configuration, or registry artifacts verified before loading.

With ``registry`` configured, every served model is a registry artifact and is verified (every file against its
manifest, the manifest against its id, the lineage against the registry, the signature against the trusted keys)
before a byte of it is loaded, at start and on every reload. A model that fails is refused: at start the gateway
does not start; on reload the previously verified model keeps serving and the refusal is logged, audited and opened
as an incident.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from bastion.gateway.config import GatewayConfig, ModelEntry

log = logging.getLogger(__name__)

ARTIFACT_INCIDENT = "artifact_verification"


@dataclass(frozen=True)
class Source:
    """What one ensemble member was loaded from: a file (its sha256) or a verified artifact (id, version, signer)."""

    path: str
    sha256: str
    artifact: str | None = None
    name: str | None = None
    version: int | None = None
    signer: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"path": self.path, "sha256": self.sha256}
        if self.artifact is not None:
            d |= {"artifact": self.artifact, "name": self.name, "version": self.version, "signer": self.signer}
        return d


def _hints(entry: ModelEntry) -> Any:
    from bastion.models.formats import SpecHints

    return SpecHints(
        input_shape=tuple(entry.input_shape) if entry.input_shape else None,
        num_classes=len(entry.class_names) if entry.class_names else None,
        bounds=entry.bounds,
        class_names=tuple(entry.class_names) if entry.class_names else None,
    )


def load_members(config: GatewayConfig, entry: ModelEntry) -> tuple[list[Any], list[Source]]:
    """The classifiers of one model entry and where each came from. Raises :class:`bastion.errors.IntegrityError`
    (with every reason) when a registry artifact fails verification; nothing of it is loaded then."""
    from bastion.models.formats import load_classifier

    hints = _hints(entry)
    members, sources = [], []
    if entry.paths:
        for p in entry.paths:
            loaded = load_classifier(p, hints=hints, arch=entry.arch, trusted_types=entry.trust)
            members.append(loaded.classifier)
            sources.append(Source(str(p), loaded.sha256))
        return members, sources
    from bastion.registry import Registry, TrustPolicy, load_verified

    assert config.registry is not None  # the configuration's validator guarantees it
    trust = TrustPolicy.from_keys(list(config.registry.trust), list(config.registry.trust_chain))
    with Registry.open(config.registry.path) as registry:
        for ref in entry.artifacts:
            got = load_verified(registry, ref, trust, hints=hints, arch=entry.arch, trusted_types=tuple(entry.trust))
            v = got.verification
            members.append(got.loaded.classifier)
            sources.append(Source(str(got.loaded.path), got.loaded.sha256, v.id, v.name, v.version, v.signer))
            log.info("serving %s@%d (%s), verified: signed by %s", v.name, v.version, v.id[:12], (v.signer or "")[:16])
    return members, sources


def artifact_alert(name: str, message: str, problems: list[str], now: float) -> Any:
    """The alert that opens (or updates) the incident of a served model refused by verification (AML.T0010)."""
    from bastion.monitors.base import Alert, Severity

    return Alert(
        "registry",
        ARTIFACT_INCIDENT,
        None,
        Severity.CRITICAL,
        f"model {name}: {message}",
        float(len(problems)),
        "AML.T0010",
        now,
        {"model": name, "problems": problems},
    )
