"""Where registry artifacts live: a content store for their folders and an index to find them, behind two interfaces.

The embedded default is one folder::

    REGISTRY/
      bastion-registry.json    marks the folder as a registry (format, index URL)
      index.db                 SQLite index (SQLAlchemy Core: any URL SQLAlchemy supports works the same)
      artifacts/<id>/          one folder per artifact version: its files and bastion-manifest.json
      signatures/<id>.sig      the OpenSSF model-signing bundle over that folder

``<id>`` is the sha256 of the artifact's manifest, which holds the sha256 of every file, so the folder name commits
to the content. The manifest is the source of truth; the index is derived from manifests and only speeds up lookups
(by name, by dataset digest, by file digest, by parent).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import sqlalchemy as sa

from bastion.errors import ArtifactError, ConfigError
from bastion.registry.manifest import MANIFEST_FILE, Manifest

MARKER = "bastion-registry.json"
REGISTRY_FORMAT = 1


@dataclass(frozen=True)
class IndexRow:
    """What the index knows of one artifact version (everything else is in its manifest)."""

    id: str
    kind: str
    name: str
    version: int
    created: str
    format: str
    size: int
    signer: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "kind": self.kind,
            "name": self.name,
            "version": self.version,
            "created": self.created,
            "format": self.format,
            "size": self.size,
            "signer": self.signer,
        }


class RegistryIndex(Protocol):
    """Lookups over registered manifests. A backend stores rows, lineage edges, dataset digests and file digests."""

    def insert(self, manifest: Manifest, dataset_digests: tuple[str, ...]) -> None: ...
    def set_signer(self, artifact_id: str, signer: str) -> None: ...
    def get(self, artifact_id: str) -> IndexRow | None: ...
    def match(self, prefix: str) -> list[IndexRow]: ...
    def versions(self, name: str, kind: str | None = None) -> list[IndexRow]: ...
    def rows(self, kind: str | None = None) -> list[IndexRow]: ...
    def datasets_with_digest(self, digest: str) -> list[IndexRow]: ...
    def with_file(self, sha256: str, kind: str | None = None) -> list[IndexRow]: ...
    def children(self, artifact_id: str) -> list[tuple[IndexRow, str]]: ...
    def close(self) -> None: ...


class ContentStore(Protocol):
    """Artifact folders and their signatures, addressed by artifact id."""

    def stage(self) -> Path: ...
    def commit(self, staged: Path, artifact_id: str) -> Path: ...
    def folder(self, artifact_id: str) -> Path: ...
    def signature(self, artifact_id: str) -> Path: ...
    def exists(self, artifact_id: str) -> bool: ...


_META = sa.MetaData()
ARTIFACTS = sa.Table(
    "artifacts",
    _META,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False, index=True),
    sa.Column("name", sa.String(200), nullable=False, index=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("created", sa.String(40), nullable=False),
    sa.Column("format", sa.String(40), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("signer", sa.String(80), nullable=True),
    sa.UniqueConstraint("kind", "name", "version", name="uq_artifact_version"),
)
LINEAGE = sa.Table(
    "lineage",
    _META,
    sa.Column("child", sa.String(64), nullable=False, index=True),
    sa.Column("parent", sa.String(64), nullable=False, index=True),
    sa.Column("role", sa.String(40), nullable=False),
)
DIGESTS = sa.Table(
    "dataset_digests",
    _META,
    sa.Column("id", sa.String(64), nullable=False, index=True),
    sa.Column("digest", sa.String(64), nullable=False, index=True),
)
FILES = sa.Table(
    "files",
    _META,
    sa.Column("id", sa.String(64), nullable=False, index=True),
    sa.Column("path", sa.String(500), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False, index=True),
)


class SqlIndex:
    """:class:`RegistryIndex` over SQLAlchemy Core (SQLite file by default; PostgreSQL by URL)."""

    def __init__(self, url: str) -> None:
        self.engine = sa.create_engine(url)
        _META.create_all(self.engine)

    def _row(self, r: sa.Row) -> IndexRow:
        return IndexRow(r.id, r.kind, r.name, r.version, r.created, r.format, r.size, r.signer)

    def insert(self, manifest: Manifest, dataset_digests: tuple[str, ...]) -> None:
        aid = manifest.id
        with self.engine.begin() as c:
            c.execute(
                ARTIFACTS.insert().values(
                    id=aid,
                    kind=manifest.kind,
                    name=manifest.name,
                    version=manifest.version,
                    created=manifest.created,
                    format=manifest.format,
                    size=manifest.size,
                )
            )
            for p in manifest.parents:
                c.execute(LINEAGE.insert().values(child=aid, parent=p.id, role=p.role))
            for d in dict.fromkeys(dataset_digests):
                c.execute(DIGESTS.insert().values(id=aid, digest=d))
            for f in manifest.files:
                c.execute(FILES.insert().values(id=aid, path=f.path, sha256=f.sha256))

    def set_signer(self, artifact_id: str, signer: str) -> None:
        with self.engine.begin() as c:
            c.execute(ARTIFACTS.update().where(ARTIFACTS.c.id == artifact_id).values(signer=signer))

    def get(self, artifact_id: str) -> IndexRow | None:
        with self.engine.connect() as c:
            r = c.execute(sa.select(ARTIFACTS).where(ARTIFACTS.c.id == artifact_id)).first()
        return self._row(r) if r is not None else None

    def match(self, prefix: str) -> list[IndexRow]:
        with self.engine.connect() as c:
            rows = c.execute(sa.select(ARTIFACTS).where(ARTIFACTS.c.id.startswith(prefix, autoescape=True))).all()
        return [self._row(r) for r in rows]

    def versions(self, name: str, kind: str | None = None) -> list[IndexRow]:
        q = sa.select(ARTIFACTS).where(ARTIFACTS.c.name == name)
        if kind is not None:
            q = q.where(ARTIFACTS.c.kind == kind)
        with self.engine.connect() as c:
            rows = c.execute(q.order_by(ARTIFACTS.c.version)).all()
        return [self._row(r) for r in rows]

    def rows(self, kind: str | None = None) -> list[IndexRow]:
        q = sa.select(ARTIFACTS)
        if kind is not None:
            q = q.where(ARTIFACTS.c.kind == kind)
        with self.engine.connect() as c:
            rows = c.execute(q.order_by(ARTIFACTS.c.kind, ARTIFACTS.c.name, ARTIFACTS.c.version)).all()
        return [self._row(r) for r in rows]

    def datasets_with_digest(self, digest: str) -> list[IndexRow]:
        q = sa.select(ARTIFACTS).join(DIGESTS, DIGESTS.c.id == ARTIFACTS.c.id).where(DIGESTS.c.digest == digest)
        with self.engine.connect() as c:
            rows = c.execute(q.order_by(ARTIFACTS.c.version)).all()
        return [self._row(r) for r in rows]

    def with_file(self, sha256: str, kind: str | None = None) -> list[IndexRow]:
        q = sa.select(ARTIFACTS).join(FILES, FILES.c.id == ARTIFACTS.c.id).where(FILES.c.sha256 == sha256)
        if kind is not None:
            q = q.where(ARTIFACTS.c.kind == kind)
        with self.engine.connect() as c:
            rows = c.execute(q.order_by(ARTIFACTS.c.created)).all()
        return list({r.id: self._row(r) for r in rows}.values())

    def children(self, artifact_id: str) -> list[tuple[IndexRow, str]]:
        q = sa.select(ARTIFACTS, LINEAGE.c.role).join(LINEAGE, LINEAGE.c.child == ARTIFACTS.c.id)
        with self.engine.connect() as c:
            rows = c.execute(q.where(LINEAGE.c.parent == artifact_id).order_by(ARTIFACTS.c.created)).all()
        return [(self._row(r), r.role) for r in rows]

    def close(self) -> None:
        self.engine.dispose()


class FolderStore:
    """:class:`ContentStore` in a local folder: ``artifacts/<id>/`` and ``signatures/<id>.sig``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "artifacts").mkdir(parents=True, exist_ok=True)
        (root / "signatures").mkdir(parents=True, exist_ok=True)

    def stage(self) -> Path:
        return Path(tempfile.mkdtemp(prefix=".staging-", dir=self.root / "artifacts"))

    def commit(self, staged: Path, artifact_id: str) -> Path:
        target = self.folder(artifact_id)
        if target.exists():
            shutil.rmtree(staged)
            raise ArtifactError(f"artifact {artifact_id[:12]}… is already registered")
        staged.rename(target)  # atomic on one filesystem: a crash leaves a staging folder, never half an artifact
        return target

    def folder(self, artifact_id: str) -> Path:
        return self.root / "artifacts" / artifact_id

    def signature(self, artifact_id: str) -> Path:
        return self.root / "signatures" / f"{artifact_id}.sig"

    def exists(self, artifact_id: str) -> bool:
        return (self.folder(artifact_id) / MANIFEST_FILE).is_file()


def create_registry_folder(root: Path, index_url: str | None = None) -> None:
    """Make ``root`` a registry (it must not exist, or be an empty folder); its index is an SQLite file in it, or
    the database at ``index_url`` (any SQLAlchemy URL, e.g. the gateway's PostgreSQL)."""
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        if (root / MARKER).is_file():
            raise ConfigError(f"{root} is already a Bastion registry")
        raise ConfigError(f"{root} exists and is not empty; a new registry needs a new or empty folder")
    if index_url is not None:
        try:
            sa.engine.make_url(index_url)
        except sa.exc.ArgumentError:
            raise ConfigError(
                f"--index {index_url!r} is not a database URL (e.g. postgresql+psycopg://host/db)"
            ) from None
    root.mkdir(parents=True, exist_ok=True)
    marker = {"format": REGISTRY_FORMAT, "index": index_url or "sqlite:///index.db"}
    (root / MARKER).write_text(json.dumps(marker, indent=1) + "\n")


def open_registry_folder(root: Path) -> tuple[RegistryIndex, ContentStore]:
    """The index and content store of the registry in ``root``; a folder that is not a registry is an error."""
    marker = root / MARKER
    if not marker.is_file():
        raise ConfigError(
            f"{root} is not a Bastion registry (no {MARKER}); create one with `bastion registry init {root}`"
        )
    try:
        meta = json.loads(marker.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{marker} is not valid JSON: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != REGISTRY_FORMAT:
        raise ConfigError(f"{marker} has an unsupported format; this Bastion reads format {REGISTRY_FORMAT}")
    url = str(meta.get("index", "sqlite:///index.db"))
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        url = f"sqlite:///{(root / url[len('sqlite:///') :]).resolve()}"
    try:
        index = SqlIndex(url)
    except sa.exc.SQLAlchemyError as e:
        raise ConfigError(f"cannot open the registry index at {url.split('@')[-1]}: {type(e).__name__}") from None
    return index, FolderStore(root)
