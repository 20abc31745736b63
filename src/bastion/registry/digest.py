"""File-level content digests of an artifact: every regular file under a folder, with its sha256 and size.

An artifact is a folder (one model file and its card, a dataset, a report's files); its digest list is what the
manifest records and what verification recomputes. Symbolic links are refused: a link can point anywhere, so what
was hashed would not be what is loaded.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from bastion.errors import ArtifactError

CHUNK = 1 << 20


@dataclass(frozen=True, order=True)
class FileDigest:
    """One file of an artifact: its path relative to the artifact folder (POSIX separators), sha256 and size."""

    path: str
    sha256: str
    size: int

    def to_dict(self) -> dict[str, object]:
        return {"path": self.path, "sha256": self.sha256, "size": self.size}


def sha256_file(path: Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB chunks (constant memory for any size)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def artifact_files(root: Path) -> list[Path]:
    """Every regular file under ``root``, sorted by relative path; a symlink anywhere is an error."""
    if root.is_symlink() or not root.is_dir():
        raise ArtifactError(f"{root} is not an artifact folder")
    files = []
    for p in sorted(root.rglob("*")):
        if p.is_symlink():
            raise ArtifactError(f"{p} is a symbolic link; an artifact holds regular files only (copy the target in)")
        if p.is_file():
            files.append(p)
    return files


def digest_tree(root: Path, *, exclude: tuple[str, ...] = ()) -> tuple[FileDigest, ...]:
    """The digest of every file under ``root`` but the relative paths in ``exclude``, sorted by path."""
    out = []
    for p in artifact_files(root):
        rel = p.relative_to(root).as_posix()
        if rel not in exclude:
            out.append(FileDigest(rel, sha256_file(p), p.stat().st_size))
    return tuple(out)


def compare(expected: tuple[FileDigest, ...], actual: tuple[FileDigest, ...]) -> list[str]:
    """Human-readable differences between two digest lists (empty when they agree)."""
    want = {d.path: d for d in expected}
    have = {d.path: d for d in actual}
    problems = [f"file {p} is missing" for p in sorted(want.keys() - have.keys())]
    problems += [f"file {p} was added (not in the manifest)" for p in sorted(have.keys() - want.keys())]
    for p in sorted(want.keys() & have.keys()):
        if want[p].sha256 != have[p].sha256:
            problems.append(
                f"file {p} changed: sha256 {have[p].sha256[:16]}… where the manifest records {want[p].sha256[:16]}…"
            )
    return problems
