"""Real malicious pickles, built here, are refused without being run; benign checkpoints pass."""

from __future__ import annotations

import os
import pickle
import sys
from pathlib import Path

import pytest
import torch

from bastion.errors import UnsafeArtifactError
from bastion.registry import require_loadable, scan_file


class _System:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, ...]:
        return (os.system, (f"touch {self.marker}",))


class _Exec:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, ...]:
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


def _getattr_chain(marker: Path) -> bytes:
    """builtins.getattr(builtins.__import__('os'), 'system')('touch MARKER'), as protocol-0 opcodes."""
    return b"cbuiltins\ngetattr\n(cbuiltins\n__import__\n(Vos\ntRVsystem\ntR(V" + f"touch {marker}".encode() + b"\ntR."


def _malicious(tmp: Path, marker: Path) -> dict[str, Path]:
    out = {}
    for proto in (0, 2, 4, 5):
        p = tmp / f"system_p{proto}.pkl"
        p.write_bytes(pickle.dumps(_System(marker), protocol=proto))
        out[p.name] = p
    p = tmp / "exec.pkl"
    p.write_bytes(pickle.dumps(_Exec(marker), protocol=4))
    out[p.name] = p
    p = tmp / "getattr_chain.pkl"
    p.write_bytes(_getattr_chain(marker))
    out[p.name] = p
    p = tmp / "nested.pkl"  # deep inside ordinary containers
    p.write_bytes(pickle.dumps({"weights": [1.0, 2.0], "meta": {"layers": [{"hook": _System(marker)}]}}, protocol=2))
    out[p.name] = p
    p = tmp / "checkpoint.pt"  # a torch.save zip whose data.pkl carries the payload beside real tensors
    torch.save({"state_dict": {"w": torch.randn(3)}, "optimizer": _System(marker)}, p)
    out[p.name] = p
    p = tmp / "legacy.bin"  # the pre-1.6 torch.save format (raw pickles, no zip)
    torch.save({"w": torch.randn(2), "x": _Exec(marker)}, p, _use_new_zipfile_serialization=False)
    out[p.name] = p
    p = tmp / "model.joblib"  # joblib writes a plain pickle
    p.write_bytes(pickle.dumps([_System(marker)], protocol=pickle.HIGHEST_PROTOCOL))
    out[p.name] = p
    return out


@pytest.fixture(scope="module")
def malicious(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Path], Path]:
    tmp = tmp_path_factory.mktemp("pickles")
    marker = tmp / "PWNED"
    return _malicious(tmp, marker), marker


NAMES = [
    "system_p0.pkl",
    "system_p2.pkl",
    "system_p4.pkl",
    "system_p5.pkl",
    "exec.pkl",
    "getattr_chain.pkl",
    "nested.pkl",
    "checkpoint.pt",
    "legacy.bin",
    "model.joblib",
]


@pytest.mark.parametrize("name", NAMES)
def test_every_malicious_variant_is_refused_and_never_run(name: str, malicious: tuple[dict[str, Path], Path]) -> None:
    files, marker = malicious
    result = scan_file(files[name])
    assert result.verdict == "malicious", result.findings
    assert not result.loadable
    with pytest.raises(UnsafeArtifactError, match="is refused: a malicious pickle"):
        require_loadable(files[name])
    assert not marker.exists(), "scanning executed the payload"


def test_the_payloads_are_real(malicious: tuple[dict[str, Path], Path]) -> None:
    """The oracle: unpickling one of them does run the command (in a child process), so refusing them matters."""
    import subprocess

    files, marker = malicious
    code = f"import pickle; pickle.load(open({str(files['getattr_chain.pkl'])!r}, 'rb'))"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    assert marker.exists()
    marker.unlink()


def test_both_scanners_see_the_os_system_payload(malicious: tuple[dict[str, Path], Path]) -> None:
    files, _ = malicious
    tools = {f.tool for f in scan_file(files["system_p4.pkl"]).findings}
    assert tools == {"fickling", "modelscan"}


def test_benign_checkpoints_and_pickles_pass(tmp_path: Path) -> None:
    torch.save(torch.nn.Linear(4, 2).state_dict(), tmp_path / "state.pt")
    torch.save({"w": torch.randn(2)}, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    (tmp_path / "plain.pkl").write_bytes(pickle.dumps({"a": [1, 2, 3], "b": "text"}, protocol=4))
    for name in ("state.pt", "legacy.pt", "plain.pkl"):
        r = scan_file(tmp_path / name)
        assert r.verdict == "safe", (name, r.findings)
        assert r.streams >= 1


def test_a_class_outside_the_allowlist_is_unsafe_even_without_a_known_payload(tmp_path: Path) -> None:
    """A pickled scikit-learn estimator imports classes that run code on load: not overtly malicious, still refused."""
    from sklearn.linear_model import LogisticRegression

    p = tmp_path / "sk.pkl"
    p.write_bytes(pickle.dumps(LogisticRegression()))
    r = scan_file(p)
    assert r.verdict == "unsafe" and "not on the ML allowlist" in r.reason()
    with pytest.raises(UnsafeArtifactError, match="unsafe pickle"):
        require_loadable(p)


def test_formats_without_pickled_code_are_not_pickles(digits_model_file: Path, tmp_path: Path) -> None:
    assert scan_file(digits_model_file).verdict == "not-pickle"
    garbage = tmp_path / "broken.pkl"
    garbage.write_bytes(b"\x80\x04\x95garbage")
    assert scan_file(garbage).verdict == "unsafe"


def _evasive(tmp: Path, marker: Path) -> dict[str, bytes]:
    """Payloads an attacker who knows the scanners would try: callables outside the usual denylists."""
    import code
    import importlib
    import pydoc

    class Pager:
        def __reduce__(self) -> tuple[object, ...]:
            return (pydoc.pipepager, ("x", f"touch {marker}"))

    class Importer:
        def __reduce__(self) -> tuple[object, ...]:
            return (importlib.import_module, ("os",))

    class Interpreter:
        def __reduce__(self) -> tuple[object, ...]:
            return (code.InteractiveInterpreter().runsource, (f"open({str(marker)!r}, 'w')",))

    class Nested:  # unpickle another file through torch.load, which is not an allowlisted rebuild function
        def __reduce__(self) -> tuple[object, ...]:
            return (torch.load, (str(tmp / "system_p4.pkl"),))

    return {
        n: pickle.dumps(c(), protocol=4)
        for n, c in [("pager", Pager), ("importer", Importer), ("interpreter", Interpreter), ("nested", Nested)]
    }


@pytest.mark.parametrize("name", ["pager", "importer", "interpreter", "nested"])
def test_payloads_built_to_evade_a_denylist_are_refused_by_the_allowlist(
    name: str, malicious: tuple[dict[str, Path], Path], tmp_path: Path
) -> None:
    files, marker = malicious
    p = tmp_path / f"{name}.pkl"
    p.write_bytes(_evasive(files["system_p4.pkl"].parent, marker)[name])
    r = scan_file(p)
    assert not r.loadable and any(f.tool == "fickling" for f in r.findings), r.findings
    assert not marker.exists()
