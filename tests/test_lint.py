"""Static checks that keep the package honest: ruff on everything, mypy on the package."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tool(name: str) -> list[str]:
    exe = Path(sys.executable).with_name(name)
    if exe.exists():
        return [str(exe)]
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed; install the test extra: pip install -e '.[test]'")
    return [found]


def test_ruff() -> None:
    p = subprocess.run([*_tool("ruff"), "check", "src", "tests", "bench"], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def test_mypy() -> None:
    p = subprocess.run(_tool("mypy"), cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def test_library_never_prints_and_never_unpickles() -> None:
    offenders = []
    for path in (ROOT / "src" / "bastion").rglob("*.py"):
        text = path.read_text()
        rel = path.relative_to(ROOT)
        in_edges = "cli" in rel.parts or "render" in rel.parts
        for i, line in enumerate(text.splitlines(), 1):
            s = line.strip()
            if s.startswith("print(") and not in_edges:
                offenders.append(f"{rel}:{i} prints")
            if "pickle.load" in s or ("torch.load(" in s and "weights_only=True" not in s):
                offenders.append(f"{rel}:{i} unpickles")
    assert offenders == []


def test_inner_layers_do_not_import_the_edges() -> None:
    inner = ["attacks", "defenses", "detectors", "monitors"]
    edges = ("bastion.gateway", "bastion.cli", "bastion.reports")
    bad = []
    for layer in inner:
        for path in (
            (ROOT / "src" / "bastion" / layer).rglob("*.py") if (ROOT / "src" / "bastion" / layer).exists() else []
        ):
            if any(e in path.read_text() for e in edges):
                bad.append(str(path.relative_to(ROOT)))
    assert bad == []


def test_core_never_imports_the_edges() -> None:
    """import-linter: attacks, defenses, detectors, monitors, models, data and assess never import gateway, cli or reports."""
    p = subprocess.run([*_tool("lint-imports")], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0 and "1 kept, 0 broken" in p.stdout, p.stdout + p.stderr
