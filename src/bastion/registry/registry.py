"""The registry: add, find, sign, verify, trace and export versioned artifacts (models, datasets, reports).

Example::

    reg = Registry.init("registry")
    data = reg.add_dataset("digits")
    model = reg.add_model("model.safetensors", sign_with=SigningKey(Path("signer.key")))
    check = reg.verify(model.id, TrustPolicy.from_keys([Path("signer.pub")]))
    assert check.ok, check.problems

A model's lineage is read from what Bastion wrote beside it (see :mod:`bastion.registry.describe`) and must resolve:
a model whose card names training data that is not registered is refused until the data is added, so every
registered model can be traced to registered, digest-checked data.
"""

from __future__ import annotations

import logging
import platform
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bastion._version import __version__
from bastion.errors import ArtifactError, ConfigError, UnknownNameError
from bastion.registry.describe import (
    Description,
    ParentHint,
    assessment_summary,
    describe_dataset,
    describe_model,
    describe_report,
)
from bastion.registry.digest import FileDigest, compare, digest_tree, sha256_file
from bastion.registry.manifest import MANIFEST_FILE, Kind, Manifest, Parent, Transformation
from bastion.registry.signing import SigningKey, TrustPolicy, sign, verify
from bastion.registry.store import (
    ContentStore,
    IndexRow,
    RegistryIndex,
    create_registry_folder,
    open_registry_folder,
)

log = logging.getLogger(__name__)


def library_versions() -> dict[str, str]:
    """The versions a transformation ran with (recorded in every manifest)."""
    import numpy
    import torch

    return {
        "bastion": __version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
    }


@dataclass(frozen=True)
class Verification:
    """The outcome of verifying one artifact: ``ok`` only when every check ran and passed."""

    id: str
    name: str
    version: int
    signer: str | None
    problems: tuple[str, ...]
    checked: tuple[str, ...]
    signature_checked: bool

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "version": self.version,
            "ok": self.ok,
            "signer": self.signer,
            "signature_checked": self.signature_checked,
            "checked": list(self.checked),
            "problems": list(self.problems),
        }


@dataclass(frozen=True)
class LineageNode:
    """One artifact in a lineage tree, with the role it plays for its child and its own parents."""

    row: IndexRow
    role: str
    parents: tuple[LineageNode, ...] = ()
    missing: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.row.to_dict(),
            "role": self.role,
            "parents": [p.to_dict() for p in self.parents],
            "missing": list(self.missing),
        }


class Registry:
    """A registry of artifacts: an index (:class:`RegistryIndex`) and a content store (:class:`ContentStore`)."""

    def __init__(self, root: Path, index: RegistryIndex, store: ContentStore) -> None:
        self.root = root
        self.index = index
        self.store = store

    @classmethod
    def init(cls, root: str | Path, *, index_url: str | None = None) -> Registry:
        """Create a new registry in ``root`` (a new or empty folder), its index in SQLite there or at ``index_url``."""
        create_registry_folder(Path(root), index_url)
        return cls.open(root)

    @classmethod
    def open(cls, root: str | Path) -> Registry:
        """Open the registry in ``root``; a folder that is not one is a :class:`ConfigError`."""
        p = Path(root)
        index, store = open_registry_folder(p)
        return cls(p, index, store)

    def close(self) -> None:
        self.index.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----- finding artifacts ---------------------------------------------------------------------------------

    def resolve(self, ref: str, kind: Kind | None = None) -> IndexRow:
        """An artifact by id, unique id prefix (≥ 6 hex digits), ``name`` (its newest version) or ``name@version``."""
        ref = ref.strip()
        if not ref:
            raise ConfigError("an artifact reference is empty; give an id, an id prefix, NAME or NAME@VERSION")
        name, _, version = ref.partition("@")
        rows = [r for r in self.index.versions(name, kind)]
        if rows:
            if version:
                hit = [r for r in rows if str(r.version) == version]
                if not hit:
                    raise UnknownNameError(
                        f"{name} has no version {version}; versions: {', '.join(str(r.version) for r in rows)}"
                    )
                return hit[0]
            if len({r.kind for r in rows}) > 1:
                raise ConfigError(f"{name} names artifacts of several kinds; add --kind (model, dataset, report)")
            return rows[-1]
        if len(ref) >= 6 and all(c in "0123456789abcdef" for c in ref.lower()):
            hits = [r for r in self.index.match(ref.lower()) if kind is None or r.kind == kind]
            if len(hits) == 1:
                return hits[0]
            if len(hits) > 1:
                raise ConfigError(f"{ref} is the prefix of {len(hits)} artifacts; give more of the id")
        raise UnknownNameError(
            f"no artifact {ref!r} in the registry {self.root}; `bastion registry list --registry {self.root}` shows them"
        )

    def manifest(self, ref: str | IndexRow) -> Manifest:
        row = self.resolve(ref) if isinstance(ref, str) else ref
        f = self.store.folder(row.id) / MANIFEST_FILE
        try:
            raw = f.read_bytes()
        except OSError as e:
            raise ArtifactError(f"artifact {row.id[:12]}… has no readable manifest: {e.strerror}") from None
        return Manifest.from_json(raw, f"manifest of {row.name}@{row.version}")

    def rows(self, kind: Kind | None = None) -> list[IndexRow]:
        return self.index.rows(kind)

    def path(self, ref: str | IndexRow) -> Path:
        """The folder holding the artifact's files (read it only after :meth:`verify`)."""
        row = self.resolve(ref) if isinstance(ref, str) else ref
        return self.store.folder(row.id)

    # ----- adding --------------------------------------------------------------------------------------------

    def add_model(
        self,
        path: str | Path,
        *,
        name: str | None = None,
        parents: Sequence[str] = (),
        assessment: str | Path | None = None,
        sign_with: SigningKey | None = None,
        extra: dict[str, Any] | None = None,
    ) -> IndexRow:
        """Register a model file (with its card or hardening record). ``assessment`` is an assess report folder or
        results.json *of this model* (checked by sha256); ``parents`` are extra parent artifacts (``role=ref`` or
        ``ref``, role "parent")."""
        desc = describe_model(Path(path))
        if assessment is not None:
            summary, model_sha = assessment_summary(Path(assessment))
            weights = sha256_file(Path(path))
            if model_sha != weights:
                raise ConfigError(
                    f"the assessment {assessment} is of a model with sha256 {model_sha[:16]}…, not of {Path(path).name} "
                    f"({weights[:16]}…); assess this model and pass that report"
                )
            desc = _with(desc, assessment=summary)
        if extra:
            desc = _with(desc, extra={**desc.extra, **extra})
        return self._add(desc, name=name, extra_parents=parents, sign_with=sign_with)

    def add_dataset(
        self,
        source: str | Path,
        *,
        name: str | None = None,
        parents: Sequence[str] = (),
        sign_with: SigningKey | None = None,
    ) -> IndexRow:
        """Register a dataset: a built-in name (its arrays are stored as .npz), an .npz, a CSV file or an image folder."""
        return self._add(describe_dataset(str(source)), name=name, extra_parents=parents, sign_with=sign_with)

    def add_report(
        self, folder: str | Path, *, name: str | None = None, sign_with: SigningKey | None = None
    ) -> IndexRow:
        """Register an assess report folder; it is linked to the registered model it assessed."""
        return self._add(describe_report(Path(folder)), name=name, extra_parents=(), sign_with=sign_with)

    def add_description(
        self, desc: Description, *, name: str | None = None, sign_with: SigningKey | None = None
    ) -> IndexRow:
        return self._add(desc, name=name, extra_parents=(), sign_with=sign_with)

    def _find_parent(self, hint: ParentHint) -> IndexRow | None:
        if hint.kind == "dataset":
            rows = self.index.datasets_with_digest(hint.digest)
        else:
            rows = self.index.with_file(hint.digest, hint.kind)
        return rows[-1] if rows else None

    def _add(
        self, desc: Description, *, name: str | None, extra_parents: Sequence[str], sign_with: SigningKey | None
    ) -> IndexRow:
        import re

        name = name or desc.name
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}", name):
            raise ConfigError(f"artifact name {name!r}: use 1-128 letters, digits, '_', '.', '+', '-' (no '@' or '/')")
        if sign_with is not None:
            sign_with.check()  # before anything is written
        parents: list[Parent] = []
        missing = []
        for hint in desc.parents:
            row = self._find_parent(hint)
            if row is None:
                missing.append(hint)
            else:
                parents.append(Parent(row.id, row.kind, hint.role))  # type: ignore[arg-type]
        if missing:
            raise ArtifactError(
                f"cannot register {name}: its lineage names artifacts that are not in the registry",
                problems=[_missing_hint(h) for h in missing],
            )
        for ref in extra_parents:
            role, _, target = ref.rpartition("=") if "=" in ref else ("parent", "", ref)
            row = self.resolve(target)
            parents.append(Parent(row.id, row.kind, role or "parent"))  # type: ignore[arg-type]
        previous = self.index.versions(name, desc.kind)
        if previous and not any(p.id == previous[-1].id for p in parents):
            parents.append(Parent(previous[-1].id, desc.kind, "previous"))
        staged = self.store.stage()
        try:
            for rel, src in desc.files.items():
                dst = staged / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dst)
            for rel, blob in desc.generated.items():
                (staged / rel).write_bytes(blob)
            files = digest_tree(staged)
            same = [r for r in previous if self.manifest(r).files == files]
            if same:
                raise ArtifactError(
                    f"{name} version {same[-1].version} ({same[-1].id[:12]}…) has exactly these files; nothing to add"
                )
            manifest = Manifest(
                kind=desc.kind,
                name=name,
                version=(previous[-1].version + 1) if previous else 1,
                format=desc.format,
                files=files,
                created=datetime.now(UTC).isoformat(timespec="seconds"),
                parents=tuple(parents),
                transformation=Transformation(desc.transformation, desc.settings, library_versions()),
                dataset_digest=desc.dataset_digest,
                training=desc.training,
                privacy=desc.privacy,
                cleaning=desc.cleaning,
                assessment=desc.assessment,
                extra={**desc.extra, **({"primary": desc.primary} if desc.primary else {})},
            )
            raw = manifest.to_json()
            (staged / MANIFEST_FILE).write_bytes(raw)
            signed_files = sorted((*files, FileDigest(MANIFEST_FILE, manifest.id, len(raw))))
            folder = self.store.commit(staged, manifest.id)
        except BaseException:
            shutil.rmtree(staged, ignore_errors=True)
            raise
        self.index.insert(manifest, desc.dataset_digests)
        log.info("registered %s %s@%d as %s", desc.kind, name, manifest.version, manifest.id)
        if sign_with is not None:
            signer = sign(folder, self.store.signature(manifest.id), sign_with, signed_files)
            self.index.set_signer(manifest.id, signer)
        row = self.index.get(manifest.id)
        assert row is not None
        return row

    def sign(self, ref: str, key: SigningKey) -> IndexRow:
        """Sign (or re-sign) an artifact after checking its files still match its manifest."""
        row = self.resolve(ref)
        content, digests = self._content_problems(row)
        if content:
            raise ArtifactError(
                f"refusing to sign {row.name}@{row.version}: it no longer matches its manifest", problems=content
            )
        signer = sign(self.store.folder(row.id), self.store.signature(row.id), key, digests)
        self.index.set_signer(row.id, signer)
        return self.resolve(row.id)

    # ----- checking ------------------------------------------------------------------------------------------

    def _content_problems(self, row: IndexRow) -> tuple[list[str], tuple[FileDigest, ...] | None]:
        """What differs between the artifact's folder and its manifest, and the digests of every file on disk (the
        manifest included; ``None`` when the folder could not be read), for the signature check to reuse."""
        import hashlib

        folder = self.store.folder(row.id)
        if not folder.is_dir():
            return [f"the artifact folder {folder} is missing"], None
        try:
            everything = digest_tree(folder)
        except ArtifactError as e:
            return [str(e)], None
        mf = next((d for d in everything if d.path == MANIFEST_FILE), None)
        if mf is None:
            return [f"{MANIFEST_FILE} is missing"], everything
        problems = []
        if mf.sha256 != row.id:
            problems.append(
                f"{MANIFEST_FILE} was edited after registration (its sha256 is {mf.sha256[:16]}…, the artifact id "
                f"{row.id[:16]}…)"
            )
        raw = (folder / MANIFEST_FILE).read_bytes()
        if hashlib.sha256(raw).hexdigest() != mf.sha256:
            problems.append(f"{MANIFEST_FILE} changed while it was being verified")
        try:
            manifest = Manifest.from_json(raw)
        except ArtifactError as e:
            return [*problems, str(e)], everything
        problems += compare(manifest.files, tuple(d for d in everything if d.path != MANIFEST_FILE))
        if (manifest.kind, manifest.name, manifest.version) != (row.kind, row.name, row.version):
            problems.append(
                f"the manifest says {manifest.kind} {manifest.name}@{manifest.version}, the index "
                f"{row.kind} {row.name}@{row.version}"
            )
        return problems, everything

    def _lineage_problems(self, manifest: Manifest) -> list[str]:
        problems = []
        for p in manifest.parents:
            row = self.index.get(p.id)
            if row is None or not self.store.exists(p.id):
                problems.append(f"lineage names {p.kind} {p.id[:16]}… ({p.role}), which is not in the registry")
            elif row.kind != p.kind:
                problems.append(f"lineage names {p.id[:16]}… as a {p.kind}, but it is a {row.kind}")
        if manifest.kind == "model" and manifest.dataset_digest:
            registered = {r.id for r in self.index.datasets_with_digest(manifest.dataset_digest)}
            if not registered:
                problems.append(
                    f"lineage names the dataset digest {manifest.dataset_digest[:16]}…, which is not in the registry"
                )
            elif not any(p.kind == "dataset" and p.id in registered for p in manifest.parents):
                problems.append(
                    f"the model's training data ({manifest.dataset_digest[:16]}…) is registered but not linked as its "
                    "dataset parent"
                )
        return problems

    def verify(self, ref: str, trust: TrustPolicy | None, *, require_signature: bool = True) -> Verification:
        """Check an artifact: its manifest against its id, every file against the manifest, its lineage against the
        registry, and its signature against ``trust``. Any changed byte, missing or extra file, edited manifest,
        unknown signer or unresolvable lineage is a problem. ``require_signature=False`` skips the signature check
        (the result then says so; it is not a verification of who made the artifact)."""
        row = self.resolve(ref)
        problems, digests = self._content_problems(row)
        checked = ["manifest", "files"]
        try:
            manifest = Manifest.from_json((self.store.folder(row.id) / MANIFEST_FILE).read_bytes())
        except (OSError, ArtifactError):
            manifest = None
        if manifest is not None:
            problems += self._lineage_problems(manifest)
            checked.append("lineage")
        signer = None
        if require_signature:
            signer_found, sig_problems = verify(
                self.store.folder(row.id), self.store.signature(row.id), trust or TrustPolicy(), digests
            )
            signer = signer_found or None
            problems += sig_problems
            checked.append("signature")
        return Verification(
            row.id, row.name, row.version, signer, tuple(dict.fromkeys(problems)), tuple(checked), require_signature
        )

    def lineage(self, ref: str, *, depth: int = 32) -> LineageNode:
        """The artifact and its ancestors, as a tree (a parent missing from the registry is listed as missing)."""
        row = self.resolve(ref)
        return self._node(row, "self", depth, set())

    def _node(self, row: IndexRow, role: str, depth: int, seen: set[str]) -> LineageNode:
        if depth <= 0 or row.id in seen:
            return LineageNode(row, role)
        manifest = self.manifest(row)
        parents, missing = [], []
        for p in manifest.parents:
            prow = self.index.get(p.id)
            if prow is None:
                missing.append(f"{p.kind} {p.id[:16]}… ({p.role})")
            else:
                parents.append(self._node(prow, p.role, depth - 1, seen | {row.id}))
        return LineageNode(row, role, tuple(parents), tuple(missing))

    def children(self, ref: str) -> list[tuple[IndexRow, str]]:
        return self.index.children(self.resolve(ref).id)

    def export(self, ref: str, dest: str | Path) -> Path:
        """Copy an artifact's files, manifest and signature into ``dest``/NAME-vVERSION (a new folder)."""
        row = self.resolve(ref)
        out = Path(dest) / f"{row.name}-v{row.version}"
        if out.exists():
            raise ConfigError(f"{out} exists; export into a new folder")
        shutil.copytree(self.store.folder(row.id), out)
        sig = self.store.signature(row.id)
        if sig.is_file():
            shutil.copyfile(sig, out.parent / f"{out.name}.sig")
        return out


def _with(desc: Description, **changes: Any) -> Description:
    import dataclasses

    return dataclasses.replace(desc, **changes)


def _missing_hint(h: ParentHint) -> str:
    if h.kind == "dataset":
        return (
            f"{h.label} (dataset digest {h.digest[:16]}…): register it first with `bastion registry add DATA --kind "
            "dataset` (the built-in name, or the .npz/CSV/folder it was trained on)"
        )
    return f"{h.label} (a {h.kind} file with sha256 {h.digest[:16]}…): register that {h.kind} first"
