"""`bastion data check` and `bastion data clean` on a user's .npz: findings with indices, the report, the gate,
the cleaned data with its record, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from tests.cli._run import run_cli

from bastion.attacks.poisoning import LabelFlip
from bastion.data import Dataset, load_dataset


def _planted(digits: Dataset, path: Path) -> tuple[set[int], set[int]]:
    flip = LabelFlip().poison(
        digits.x_train, digits.y_train, digits.spec, rate=0.1, generator=torch.Generator().manual_seed(0)
    )
    x, y = flip.x.numpy(), flip.y.numpy()
    x = np.concatenate([x, x[:4]])
    y = np.concatenate([y, y[:4]])
    np.savez(path, x_train=x, y_train=y, x_test=digits.x_test.numpy(), y_test=digits.y_test.numpy())
    n = flip.x.shape[0]
    return set(flip.indices.tolist()), set(range(n, n + 4))


def test_check_finds_planted_problems_and_clean_removes_them(digits: Dataset, tmp_path: Path) -> None:
    data = tmp_path / "mine.npz"
    flipped, copies = _planted(digits, data)
    common = ("--checks", "schema,range,duplicates,class-balance,label-errors", "--label-epochs", "60")
    ran = run_cli(
        "data", "check", str(data), *common, "--json", str(tmp_path / "f.json"), "--report", str(tmp_path / "r.html")
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "problems found" in ran.stdout
    found = {f["check"]: f for f in json.loads((tmp_path / "f.json").read_text())["findings"]}
    assert set(found["duplicates"]["indices"]) == copies
    labels = set(found["label-errors"]["indices"])
    assert len(labels & flipped) >= 0.8 * len(labels) and len(labels & flipped) >= 0.7 * len(flipped)
    assert "label-errors: the first 16" in (tmp_path / "r.html").read_text()
    gate = run_cli("data", "check", str(data), "--checks", "duplicates", "--fail-on-findings")
    assert gate.returncode == 1

    out, q = tmp_path / "clean.npz", tmp_path / "q.npz"
    ran = run_cli("data", "clean", str(data), *common, "--out", str(out), "--quarantine", str(q))
    assert ran.returncode == 0, ran.stdout + ran.stderr
    record = json.loads(out.with_suffix(".cleaning.json").read_text())
    cleaned = load_dataset(str(out))
    assert record["source"]["sha256"] != record["result"]["sha256"] == cleaned.provenance.sha256
    assert record["result"]["rows"] == cleaned.x_train.shape[0] == record["source"]["rows"] - record["removed"]
    removed = {r["index"] for r in record["rows"]}
    assert copies <= removed and {"duplicates"} == set(record["rows"][-1]["checks"])
    with np.load(q) as z:
        assert set(z["index"].tolist()) == removed and z["x"].shape[0] == record["removed"]
    assert cleaned.x_test.shape[0] == digits.x_test.shape[0]  # the test split is kept as it was


def test_bad_input_gets_one_line_and_exit_2(tmp_path: Path) -> None:
    unlabelled = tmp_path / "nolabels.npz"
    np.savez(unlabelled, x=np.zeros((10, 4), dtype=np.float32))
    for args in (
        ("data", "check", str(unlabelled)),
        ("data", "check", "digits", "--checks", "spelling"),
        ("data", "check", "digits", "--detector", "magic"),
        ("data", "check", "digits", "--epochs", "0"),
        ("data", "clean", "digits", "--out", str(tmp_path / "x.csv")),
        ("data", "check", str(tmp_path / "missing.npz")),
    ):
        ran = run_cli(*args)
        assert ran.returncode == 2, (args, ran.stdout, ran.stderr)
        assert ran.stderr.startswith("error:") and len(ran.stderr.strip().splitlines()) == 1, ran.stderr


def test_confusion_check_reads_trusted_rows_and_reports_them(digits: Dataset, tmp_path: Path) -> None:
    data, trusted = tmp_path / "mine.npz", tmp_path / "trusted.npz"
    np.savez(data, x=digits.x_train.numpy(), y=digits.y_train.numpy())  # one split: no test rows to trust
    np.savez(trusted, x=digits.x_test.numpy(), y=digits.y_test.numpy())
    args = ("data", "check", str(data), "--checks", "schema,confusion", "--json", str(tmp_path / "f.json"))
    without = run_cli(*args)
    assert without.returncode == 0 and "did not run" in without.stdout, without.stdout + without.stderr
    ran = run_cli(*args, "--trusted", str(trusted), "--report", str(tmp_path / "r.html"))
    assert ran.returncode == 0, ran.stdout + ran.stderr
    got = json.loads((tmp_path / "f.json").read_text())
    assert got["trusted_from"] == f"{digits.x_test.shape[0]} given trusted rows"
    assert got["confusion"]["conclusive"] and got["confusion"]["attacked_classes"] == []
    assert "Confusion training" in (tmp_path / "r.html").read_text()
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, x=np.zeros((100, 4), dtype=np.float32), y=np.zeros(100, dtype=np.int64))
    bad = run_cli(*args, "--trusted", str(wrong))
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "--trusted" in bad.stderr, bad.stderr
