"""The manifest of one artifact version: what it contains, where it came from, and what was checked about it.

A manifest is stored as ``bastion-manifest.json`` inside the artifact's folder, so the signature covers it with the
files; its sha256 (of the canonical JSON) is the artifact's id, so a manifest edited after registration no longer
matches its id. Fields:

- ``files``: sha256 and size of every file (the content digests);
- ``parents``: lineage, each parent artifact by id with its role (``dataset`` a model was trained on, ``source`` a
  cleaned dataset came from, ``model`` a hardened model started from, ``previous`` version of the same name);
- ``transformation``: what made this version (train, harden, clean, import, convert, register), its settings, and the
  Bastion and library versions that ran it;
- ``training``, ``privacy`` (the DP budget), ``cleaning`` (the cleaning record), ``assessment`` (policy and verdict);
- ``dataset_digest``: for a dataset, Bastion's fingerprint of its arrays; for a model, the fingerprint of the data its
  card says it was trained on (the lineage check looks it up in the registry).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from bastion.errors import ArtifactError
from bastion.registry.digest import FileDigest

Kind = Literal["model", "dataset", "report"]
KINDS: tuple[Kind, ...] = ("model", "dataset", "report")
MANIFEST_FILE = "bastion-manifest.json"
MANIFEST_FORMAT = 1


@dataclass(frozen=True)
class Parent:
    """One lineage edge: the parent artifact's id, its kind, and the role it played."""

    id: str
    kind: Kind
    role: str

    def to_dict(self) -> dict[str, str]:
        return {"id": self.id, "kind": self.kind, "role": self.role}


@dataclass(frozen=True)
class Transformation:
    """What produced an artifact version: ``name`` (train, harden, clean, import, convert, register), its settings
    and the versions of Bastion and the libraries that ran it."""

    name: str
    settings: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "settings": self.settings, "versions": self.versions}


@dataclass(frozen=True)
class Manifest:
    """One artifact version's record (see the module docstring for each field)."""

    kind: Kind
    name: str
    version: int
    format: str
    files: tuple[FileDigest, ...]
    created: str
    parents: tuple[Parent, ...] = ()
    transformation: Transformation = Transformation("register")
    dataset_digest: str | None = None
    training: dict[str, Any] = field(default_factory=dict)
    privacy: dict[str, Any] | None = None
    cleaning: dict[str, Any] | None = None
    assessment: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": MANIFEST_FORMAT,
            "kind": self.kind,
            "name": self.name,
            "version": self.version,
            "artifact_format": self.format,
            "files": [f.to_dict() for f in self.files],
            "created": self.created,
            "parents": [p.to_dict() for p in self.parents],
            "transformation": self.transformation.to_dict(),
            "dataset_digest": self.dataset_digest,
            "training": self.training,
            "privacy": self.privacy,
            "cleaning": self.cleaning,
            "assessment": self.assessment,
            "extra": self.extra,
        }

    def to_json(self) -> bytes:
        """Canonical JSON (sorted keys, no whitespace): the bytes whose sha256 is the artifact id."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), allow_nan=False).encode()

    @property
    def id(self) -> str:
        return hashlib.sha256(self.to_json()).hexdigest()

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    @classmethod
    def from_json(cls, raw: bytes, source: str = "manifest") -> Manifest:
        try:
            d = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise ArtifactError(f"{source} is not valid JSON: {e}") from None
        if not isinstance(d, dict):
            raise ArtifactError(f"{source} must be a JSON object")
        if d.get("format") != MANIFEST_FORMAT:
            raise ArtifactError(f"{source} has format {d.get('format')!r}; this Bastion reads {MANIFEST_FORMAT}")
        try:
            kind = d["kind"]
            if kind not in KINDS:
                raise ValueError(f"kind {kind!r} is not one of {', '.join(KINDS)}")
            t = d.get("transformation") or {}
            return cls(
                kind=kind,
                name=str(d["name"]),
                version=int(d["version"]),
                format=str(d["artifact_format"]),
                files=tuple(FileDigest(str(f["path"]), str(f["sha256"]), int(f["size"])) for f in d["files"]),
                created=str(d["created"]),
                parents=tuple(Parent(str(p["id"]), p["kind"], str(p["role"])) for p in d.get("parents") or []),
                transformation=Transformation(
                    str(t.get("name", "register")), dict(t.get("settings") or {}), dict(t.get("versions") or {})
                ),
                dataset_digest=d.get("dataset_digest"),
                training=dict(d.get("training") or {}),
                privacy=d.get("privacy"),
                cleaning=d.get("cleaning"),
                assessment=d.get("assessment"),
                extra=dict(d.get("extra") or {}),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ArtifactError(f"{source} has a missing or malformed field: {e}") from None
