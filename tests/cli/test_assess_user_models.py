"""`bastion assess` on a user's own model files and data, in-process (the exit code is the point, not a process)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bastion.cli.main import main
from bastion.data import Dataset

POLICY = (
    "samples: 60\nseed: 3\nattacks:\n  - {attack: pgd, eps: [0.1], params: {steps: 10}}\n"
    "thresholds:\n  - {probe: pgd-linf, eps: 0.1, min: 0.0}\n"
)


def _assess(tmp: Path, *args: str) -> tuple[int, dict[str, object]]:
    (tmp / "p.yaml").write_text(POLICY)
    out = tmp / f"r{len(list(tmp.glob('r*')))}"
    code = main(["assess", *args, "--policy", str(tmp / "p.yaml"), "--out", str(out)])
    results = json.loads((out / "results.json").read_text()) if (out / "results.json").is_file() else {}
    return code, results


def test_each_format_from_the_cli_and_onnx_white_box_equals_the_original(
    user_models: dict[str, Path], digits_model_file: Path, tmp_path: Path
) -> None:
    code, original = _assess(tmp_path, str(digits_model_file))
    assert code == 0
    want = original["attacks"][0]["budgets"][0]["robust_accuracy"]  # type: ignore[index]
    for key in ("onnx", "pt2", "torchscript"):
        code, res = _assess(tmp_path, str(user_models[key]), "--data", "digits")
        assert code == 0, key
        assert res["model"]["access"] == "white-box"  # type: ignore[index]
        assert abs(res["attacks"][0]["budgets"][0]["robust_accuracy"] - want) <= 0.01, key  # type: ignore[index]
    code, res = _assess(
        tmp_path, str(user_models["safetensors"]), "--data", "digits", "--arch", "tests.conftest:digits_cnn_factory"
    )
    assert code == 0 and abs(res["attacks"][0]["budgets"][0]["robust_accuracy"] - want) <= 0.01  # type: ignore[index]


def test_black_box_models_get_the_black_box_policy(user_models: dict[str, Path], tmp_path: Path) -> None:
    code = main(
        ["assess", str(user_models["skops"]), "--data", "digits", "--samples", "6", "--out", str(tmp_path / "s")]
    )
    assert code == 0
    res = json.loads((tmp_path / "s" / "results.json").read_text())
    assert res["policy"]["name"] == "blackbox" and res["model"]["format"] == "skops"
    code = main(["assess", str(user_models["onnx"]), "--data", "digits", "--black-box", "--policy", "nope.yaml"])
    assert code == 2
    (tmp_path / "w.yaml").write_text("attacks:\n  - {attack: pgd, eps: [0.1]}\n")
    code = main(["assess", str(user_models["skops"]), "--data", "digits", "--policy", str(tmp_path / "w.yaml")])
    assert code == 2


def test_user_npz_data(user_models: dict[str, Path], digits: Dataset, tmp_path: Path) -> None:
    np.savez(tmp_path / "mine.npz", x=digits.x_test.numpy(), y=digits.y_test.numpy())
    code, res = _assess(tmp_path, str(user_models["onnx"]), "--data", str(tmp_path / "mine.npz"))
    assert code == 0 and res["data"]["source"] == "user npz" and len(res["data"]["sha256"]) == 64  # type: ignore[index]


@pytest.mark.parametrize(
    ("args", "exit_code"),
    [
        (["MODEL:pickle", "--data", "digits"], 2),
        (["MODEL:onnx"], 2),  # no --data and no card
        (["MODEL:onnx", "--data", "breast-cancer"], 2),  # wrong shape
        (["MODEL:torchscript", "--data", "digits", "--input-shape", "1,x"], 2),
        (["MODEL:onnx", "--data", "nothing.npz"], 2),
        (["MODEL:onnx", "--data", "digits", "--bounds", "1,0"], 2),
        (["MODEL:onnx", "--data", "digits", "--image-size", "8x8"], 2),  # a file option on a built-in dataset
        (["MODEL:onnx", "--data", "nowhere"], 2),  # neither a built-in nor a path
        (["MODEL:onnx", "--data", "digits", "--baseline", "none.json"], 2),  # checked before the run
        (["MODEL:torchscript", "--data", "digits", "--arch", "x:y"], 2),  # --arch is for bare weights only
    ],
)
def test_bad_model_and_data_input_exit_2(
    args: list[str], exit_code: int, user_models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [str(user_models[a.split(":", 1)[1]]) if a.startswith("MODEL:") else a for a in args]
    assert main(["assess", *argv, "--out", str(tmp_path / "r")]) == exit_code
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "Traceback" not in err and len(err.splitlines()) == 1


def test_breast_cancer_runs_the_default_policy(tmp_path: Path) -> None:
    model = tmp_path / "bc.safetensors"
    assert main(["train", "--data", "breast-cancer", "--epochs", "20", "--out", str(model)]) == 0
    assert main(["assess", str(model), "--out", str(tmp_path / "r")]) == 0
    res = json.loads((tmp_path / "r" / "results.json").read_text())
    assert res["n_samples"] == 143 and len(res["attacks"]) == 6 and res["gate"]["status"] == "no gate"
