"""`bastion harden`: train, save with a record, and assess before and after with one policy."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from tests.cli._run import run_cli

from bastion.models.formats import load_classifier
from bastion.models.zoo.card import read_card

POLICY = {"samples": 120, "attacks": [{"attack": "pgd", "eps": [0.1], "params": {"steps": 10}}]}
FAST = ["--method", "fast-at", "--epochs", "6", "--check-samples", "200"]


def _policy(tmp_path: Path) -> Path:
    p = tmp_path / "policy.yaml"
    p.write_text(yaml.safe_dump(POLICY))
    return p


def _outputs(out: Path, report: Path, policy: Path) -> list[str]:
    return ["--out", str(out), "--report", str(report), "--policy", str(policy)]


def test_harden_a_zoo_model_writes_its_card_and_a_before_after_report(digits_model_file: Path, tmp_path: Path) -> None:
    out, rep = tmp_path / "hard.safetensors", tmp_path / "rep"
    ran = run_cli(
        "harden",
        str(digits_model_file),
        *FAST,
        *_outputs(out, rep, _policy(tmp_path)),
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    card = read_card(out)
    assert card.training["method"] == "fast-at" and card.training["settings"]["eps"] == 0.1
    assert card.training["hardened_from"]["file"] == digits_model_file.name and len(card.training["history"]) >= 1
    data = json.loads((rep / "comparison.json").read_text())
    robust = next(r for r in data["rows"] if r["metric"] == "robust_accuracy")
    assert robust["after"] >= robust["before"] + 0.1, robust  # PGD-10 at eps 0.1 on 120 test digits
    assert (rep / "before" / "index.html").is_file() and (rep / "after" / "index.html").is_file()
    html = (rep / "index.html").read_text()
    assert "Before and after, the same policy" in html and "Sanity checks on the hardened model" in html
    assert (tmp_path / "hard.checkpoints" / "checkpoint.json").is_file()


def test_a_model_without_a_card_is_exported_as_pt2(user_models: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "hard.pt2"
    ran = run_cli(
        "harden",
        str(user_models["onnx"]),
        "--data",
        "digits",
        *FAST,
        *_outputs(out, tmp_path / "r", _policy(tmp_path)),
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    loaded = load_classifier(out)
    assert loaded.format == "torch.export" or loaded.path == out
    record = json.loads((tmp_path / "hard.hardening.json").read_text())
    assert record["method"] == "fast-at" and record["hardened_from"]["file"] == "digits.onnx"


def test_bad_requests_get_one_line_and_exit_2(
    digits_model_file: Path, user_models: dict[str, Path], tmp_path: Path
) -> None:
    cases = [
        ("harden", str(digits_model_file), "--method", "free-at"),
        ("harden", str(digits_model_file), "--eps", "0"),
        ("harden", str(digits_model_file), "--eps", "2"),
        ("harden", str(tmp_path / "missing.safetensors")),
        (
            "harden",
            str(digits_model_file),
            "--out",
            str(tmp_path / "x.onnx"),
            "--epochs",
            "1",
            "--check-samples",
            "100",
            "--policy",
            str(_policy(tmp_path)),
        ),
        ("harden", str(user_models["skops"]), "--data", "digits", "--input-shape", "1,8,8"),
        ("harden", str(digits_model_file), "--resume", "--checkpoint-dir", str(tmp_path / "none")),
        ("harden", str(digits_model_file), "--data", "breast-cancer"),
        ("harden", str(digits_model_file), "--method", "dp-sgd", "--epsilon", "0"),
        ("harden", str(digits_model_file), "--method", "dp-sgd", "--features", "fancy"),
        ("harden", str(digits_model_file), "--method", "dp-sgd", "--dp-mode", "ew"),
        ("harden", str(digits_model_file), "--method", "pgd-at", "--features", "scatternet"),
        ("harden", str(digits_model_file), "--method", "dp-sgd", "--features", "scatternet", "--keep-weights"),
        ("harden", str(user_models["skops"]), "--data", "breast-cancer", "--method", "dp-sgd"),
        ("harden", str(user_models["torchscript"]), "--data", "digits", "--method", "dp-sgd"),
        ("harden", str(user_models["pt2"]), "--data", "digits", "--method", "dp-sgd"),
        (
            "harden",
            str(digits_model_file),
            "--method",
            "dp-sgd",
            "--resume",
            "--checkpoint-dir",
            str(tmp_path / "none"),
        ),
    ]
    for args in cases:
        ran = run_cli(*args)
        assert ran.returncode == 2, (args, ran.stdout[-300:], ran.stderr)
        assert ran.stderr.startswith("error:") and len(ran.stderr.strip().splitlines()) == 1, (args, ran.stderr)


def test_dp_sgd_writes_the_privacy_budget_into_card_and_report(digits_model_file: Path, tmp_path: Path) -> None:
    out, rep = tmp_path / "dp.safetensors", tmp_path / "rep"
    ran = run_cli(
        "harden",
        str(digits_model_file),
        "--method",
        "dp-sgd",
        "--epsilon",
        "3",
        "--delta",
        "1e-4",
        "--epochs",
        "3",
        *_outputs(out, rep, _policy(tmp_path)),
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    privacy = read_card(out).training["privacy"]
    assert privacy["epsilon"] <= 3.0 + 1e-6 and privacy["delta"] == 1e-4 and privacy["accountant"] == "prv"
    assert privacy["noise_multiplier"] > 0 and privacy["steps"] > 0
    html = (rep / "index.html").read_text()
    assert "Privacy budget" in html and "Membership inference (loss threshold)" in html
    mia = json.loads((rep / "comparison.json").read_text())["training"]["membership_inference"]
    assert 0 <= mia["before"]["auc"] <= 1 and 0 <= mia["after"]["auc"] <= 1 and mia["after"]["members"] == 360
    bad = run_cli("harden", str(digits_model_file), "--method", "dp-sgd", "--delta", "0.01")
    assert bad.returncode == 2 and "below 1/n" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_a_failed_gate_on_the_hardened_model_exits_1(digits_model_file: Path, tmp_path: Path) -> None:
    strict = tmp_path / "strict.yaml"
    strict.write_text(
        yaml.safe_dump(
            {**POLICY, "thresholds": [{"probe": "pgd-linf", "eps": 0.1, "metric": "robust_accuracy", "min": 0.99}]}
        )
    )
    out = tmp_path / "h.safetensors"
    ran = run_cli(
        "harden",
        str(digits_model_file),
        *FAST,
        *_outputs(out, tmp_path / "r", strict),
    )
    assert ran.returncode == 1 and "policy gate fail" in ran.stdout
    assert out.is_file()  # the model is written; the verdict on it is the policy's


def test_dp_sgd_with_scatternet_features_replaces_the_model_and_resumes(
    digits_model_file: Path, tmp_path: Path
) -> None:
    out, ck = tmp_path / "dps.safetensors", tmp_path / "ck"
    args = [
        "harden",
        str(digits_model_file),
        "--method",
        "dp-sgd",
        "--features",
        "scatternet",
        "--epsilon",
        "3",
        "--delta",
        "1e-4",
        "--epochs",
        "4",
        "--lr",
        "2",
        "--max-grad-norm",
        "0.1",
        "--batch-size",
        "128",
        "--checkpoint-dir",
        str(ck),
        *_outputs(out, tmp_path / "rep", _policy(tmp_path)),
    ]
    ran = run_cli(*args)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    card = read_card(out)
    assert card.architecture == "scatternet-linear" and card.training["replaces"]["file"] == digits_model_file.name
    assert "redrawn" in card.training["initial_weights"] and card.training["privacy"]["epsilon"] <= 3.0 + 1e-6
    assert card.clean_accuracy >= 0.85, card.clean_accuracy  # measured 0.95 (the end-to-end CNN: about 0.8)
    first = out.read_bytes()
    # every epoch was checkpointed: resuming the finished run trains nothing more and gives the same model
    again = run_cli(*args, "--resume")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "resumed after epoch 4" in again.stdout and read_card(out).training["resumed_from"] == 4
    assert out.read_bytes() == first
