"""`bastion registry`: the whole flow from the command line, bad input as one line with exit 2, failures exit 1."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
from tests.cli._run import run_cli


def _ok(*args: str) -> str:
    ran = run_cli(*args)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    return ran.stdout


def test_register_sign_verify_trace_and_export(tmp_path: Path, digits_model_file: Path) -> None:
    reg = str(tmp_path / "reg")
    key, pub = tmp_path / "k" / "signer.key", tmp_path / "k" / "signer.pub"
    _ok("registry", "init", reg)
    out = _ok("registry", "keygen", "--key", str(key))
    assert "signer fingerprint" in out and oct(key.stat().st_mode & 0o777) == "0o600" and pub.is_file()
    _ok("registry", "add", "digits", "-r", reg, "--sign", str(key))
    added = _ok("registry", "add", str(digits_model_file), "-r", reg, "--sign", str(key))
    assert "lineage: dataset" in added
    assert "digits@1" not in _ok("registry", "list", "-r", reg)  # the table is for people; --json for scripts
    listed = json.loads(_ok("registry", "list", "-r", reg, "--json"))
    assert [(r["kind"], r["version"]) for r in listed] == [("dataset", 1), ("model", 1)]
    assert all(r["signer"] for r in listed)
    shown = json.loads(_ok("registry", "show", "digits", "-r", reg))
    assert shown["kind"] == "dataset" and shown["children"][0]["role"] == "dataset"
    assert "verified" in _ok("registry", "verify", "-r", reg, "--trust", str(pub))
    tree = _ok("registry", "lineage", shown["children"][0]["id"][:12], "-r", reg)
    assert "digits@1" in tree and "(dataset)" in tree
    _ok("registry", "export", shown["children"][0]["id"], "-r", reg, "--bom", "--out", str(tmp_path / "bom.json"))
    assert json.loads((tmp_path / "bom.json").read_text())["specVersion"] == "1.6"

    weights = next((tmp_path / "reg" / "artifacts" / shown["children"][0]["id"]).glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes() + b"\x00")
    bad = run_cli("registry", "verify", "-r", reg, "--trust", str(pub), "--json", str(tmp_path / "v.json"))
    assert bad.returncode == 1 and "FAILED" in bad.stdout and "changed" in bad.stdout
    results = {r["name"]: r["ok"] for r in json.loads((tmp_path / "v.json").read_text())}
    assert results == {"digits": True, shown["children"][0]["name"]: False}
    refused = run_cli("registry", "export", shown["children"][0]["id"], "-r", reg, "--out", str(tmp_path / "x"))
    assert refused.returncode == 1 and "failed verification" in " ".join(refused.stdout.split())
    assert not (tmp_path / "x").exists()


def test_scan_exits_1_on_a_malicious_pickle(tmp_path: Path, digits_model_file: Path) -> None:
    class Evil:
        def __reduce__(self) -> tuple[object, ...]:
            return (os.system, ("true",))

    bad = tmp_path / "evil.pkl"
    bad.write_bytes(pickle.dumps(Evil()))
    ran = run_cli("registry", "scan", str(bad), str(digits_model_file), "--json", str(tmp_path / "s.json"))
    assert ran.returncode == 1 and "malicious" in ran.stdout
    verdicts = [r["verdict"] for r in json.loads((tmp_path / "s.json").read_text())]
    assert verdicts == ["malicious", "not-pickle"]
    assert run_cli("registry", "scan", str(digits_model_file)).returncode == 0
    imported = run_cli("registry", "import", str(bad), "-r", str(tmp_path), "--convert")
    assert imported.returncode == 2  # not a registry: refused before the file is even scanned


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["registry", "list", "-r", "{tmp}"], "is not a Bastion registry"),
        (["registry", "show", "nope", "-r", "{reg}"], "no artifact 'nope'"),
        (["registry", "verify", "-r", "{reg}", "--trust", "{notakey}"], "is not a PEM public key"),
        (["registry", "add", "digits", "-r", "{reg}", "--sign", "{notakey}"], "is not a PEM private key"),
        (["registry", "verify", "-r", "{reg}"], "give the signers you trust with --trust"),
        (["registry", "add", "missing.safetensors", "-r", "{reg}"], "does not exist"),
        (["registry", "add", "digits", "-r", "{reg}", "--kind", "weights"], "--kind must be"),
        (["registry", "keygen", "--key", "{notakey}"], "never overwrites a key"),
        (["registry", "init", "{tmp}"], "exists and is not empty"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str, tmp_path: Path) -> None:
    reg = tmp_path / "reg"
    assert run_cli("registry", "init", str(reg)).returncode == 0
    notakey = tmp_path / "notakey.pem"
    notakey.write_text("-----BEGIN NOTHING-----\nabc\n")
    fill = {"tmp": str(tmp_path), "reg": str(reg), "notakey": str(notakey)}
    ran = run_cli(*[a.format(**fill) for a in args], cwd=tmp_path)
    assert ran.returncode == 2, ran.stdout + ran.stderr
    assert message in ran.stderr.replace("\n", " ")
    assert len(ran.stderr.strip().splitlines()) == 1 and "Traceback" not in ran.stderr
