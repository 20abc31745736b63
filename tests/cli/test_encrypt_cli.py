"""`bastion encrypt-model`: converts what it can, reports accuracy and parameters, refuses the rest in one line."""

from __future__ import annotations

from pathlib import Path

import torch
from tests.cli._run import run_cli

from bastion.defenses.encrypted import PolyMLPWeights
from bastion.defenses.encrypted.storage import load_converted


def test_a_logistic_regression_converts_and_round_trips(tmp_path: Path) -> None:
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression

    from bastion.data import load_dataset

    d = load_dataset("breast-cancer")
    est = LogisticRegression(max_iter=2000).fit(d.x_train.numpy(), d.y_train.numpy())
    sio.dump(est, str(tmp_path / "lr.skops"))
    ran = run_cli(
        "encrypt-model",
        str(tmp_path / "lr.skops"),
        "--data",
        "breast-cancer",
        "--out",
        str(tmp_path / "lr.safetensors"),
    )
    assert ran.returncode == 0, ran.stderr
    text = " ".join(ran.stdout.split())
    assert "linear (30 -> 2)" in text and "same label on 100.00%" in text and "HE standard" in text
    weights, info = load_converted(tmp_path / "lr.safetensors")
    assert info["kind"] == "linear" and info["agreement"] == 1.0
    assert torch.equal(weights.plaintext(d.x_test).argmax(1), torch.from_numpy(est.predict(d.x_test.numpy())))


def test_a_relu_mlp_converts_with_its_polynomial_accuracy_reported(tmp_path: Path) -> None:
    from bastion.data import load_dataset
    from bastion.models.zoo import save_model, train_model

    data = load_dataset("breast-cancer")
    trained = train_model(data, architecture="tabular-mlp", arch_params={"hidden": (16,)}, epochs=30, seed=0)
    save_model(trained.module, trained.card, tmp_path / "mlp.safetensors")
    ran = run_cli(
        "encrypt-model",
        str(tmp_path / "mlp.safetensors"),
        "--data",
        "breast-cancer",
        "--out",
        str(tmp_path / "mlp-he.safetensors"),
    )
    assert ran.returncode == 0, ran.stderr
    assert "poly-mlp (30 -> 2)" in ran.stdout and "activation:" in ran.stdout and "depth 4" in ran.stdout
    weights, info = load_converted(tmp_path / "mlp-he.safetensors")
    assert isinstance(weights, PolyMLPWeights) and info["depth"] == 4
    assert info["converted_accuracy"] >= 0.9 * info["accuracy"]


def test_unconvertible_models_and_bad_input_exit_2_in_one_line(tmp_path: Path, digits_model_file: Path) -> None:
    ran = run_cli("encrypt-model", str(digits_model_file), "--data", "digits", "--out", str(tmp_path / "x.safetensors"))
    assert ran.returncode == 2 and "Conv2d" in ran.stderr and len(ran.stderr.strip().splitlines()) == 1
    ran = run_cli(
        "encrypt-model",
        str(digits_model_file),
        "--data",
        "digits",
        "--out",
        str(tmp_path / "x.safetensors"),
        "--min-accuracy-ratio",
        "0",
    )
    assert ran.returncode == 2 and "--min-accuracy-ratio" in ran.stderr
    assert not (tmp_path / "x.safetensors").exists()
