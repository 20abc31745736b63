"""The gateway serves a user's own model files: ONNX, torch.export, TorchScript, skops, and ensembles mixing them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from bastion.data import Dataset
from bastion.errors import ArtifactError, ConfigError
from bastion.gateway import Gateway, create_app, parse_config


def _serve(tmp: Path, models: dict[str, dict[str, object]], **extra: object) -> tuple[Gateway, TestClient, str]:
    cfg = parse_config(
        {
            "models": models,
            "database": str(tmp / "gw.db"),
            "rate": {"requests_per_second": 1000, "inputs_per_minute": 1_000_000, "inputs_per_day": 10_000_000},
            **extra,
        },
        base=tmp,
    )
    gw = Gateway.from_config(cfg, monitors="monitors" in extra)
    _, key = gw.keys.create("app", ["predict:scores"])
    return gw, TestClient(create_app(gw)), key


@pytest.mark.parametrize("key", ["onnx", "pt2", "torchscript", "skops"])
def test_each_format_is_served(key: str, user_models: dict[str, Path], digits: Dataset, tmp_path: Path) -> None:
    entry: dict[str, object] = {"paths": [str(user_models[key])]}
    if key in ("torchscript", "skops"):
        entry["input_shape"] = [1, 8, 8]  # TorchScript states no shape; the estimator takes 64 flat features
    gw, client, api_key = _serve(tmp_path, {"m": entry})
    try:
        x = digits.x_test[:20]
        r = client.post(
            "/v1/models/m/predict", json={"inputs": x.tolist()}, headers={"Authorization": f"Bearer {api_key}"}
        )
        assert r.status_code == 200, r.text
        labels = np.array(r.json()["labels"])
        assert (labels == digits.y_test[:20].numpy()).mean() > 0.8
    finally:
        gw.close()


def test_mixed_ensemble_with_monitors_on_a_user_dataset(
    user_models: dict[str, Path], digits: Dataset, tmp_path: Path
) -> None:
    np.savez(tmp_path / "calib.npz", x=digits.x_train.numpy(), y=digits.y_train.numpy())
    models = {"mix": {"paths": [str(user_models["onnx"]), str(user_models["skops"])], "input_shape": [1, 8, 8]}}
    gw, client, api_key = _serve(tmp_path, models, monitors={"baseline": "calib.npz"})
    try:
        r = client.post(
            "/v1/models/mix/predict",
            json={"inputs": digits.x_test[:8].tolist()},
            headers={"Authorization": f"Bearer {api_key}"},
        )
        assert r.status_code == 200, r.text
    finally:
        gw.close()


def test_bad_model_entries_fail_at_start(user_models: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="pickle"):
        _serve(tmp_path, {"m": {"paths": [str(user_models["pickle"])]}})
    with pytest.raises(ArtifactError, match="--input-shape"):
        _serve(tmp_path, {"m": {"paths": [str(user_models["torchscript"])]}})
    with pytest.raises(ConfigError, match=r"monitors\.baseline"):
        _serve(tmp_path, {"m": {"paths": [str(user_models["onnx"])]}}, monitors={})
    assert not (tmp_path / "gw.db").exists()  # nothing left behind by a refused start


def test_baseline_outside_the_models_bounds_names_the_bounds_to_set(
    user_models: dict[str, Path], digits: Dataset, tmp_path: Path
) -> None:
    """An ONNX file states no input range, so the gateway assumes [0, 1]; data in 0..16 (digits before scaling)
    would make every real request a 422. The start is refused with the setting that fixes it."""
    np.savez(tmp_path / "raw.npz", x=(digits.x_train * 16).numpy(), y=digits.y_train.numpy())
    with pytest.raises(ConfigError, match=r"set bounds: \[0, 16\]"):
        _serve(tmp_path, {"m": {"paths": [str(user_models["onnx"])]}}, monitors={"baseline": "raw.npz"})
    assert not (tmp_path / "gw.db").exists()


def test_with_every_monitor_and_detector_off_no_baseline_is_needed(
    user_models: dict[str, Path], tmp_path: Path
) -> None:
    from bastion.monitors import MONITORS

    off = {name: {"enabled": False} for name in MONITORS.names()}
    gw, client, key = _serve(
        tmp_path, {"m": {"paths": [str(user_models["onnx"])]}}, monitors=off, detectors={"enabled": False}
    )
    try:
        assert gw.screens["m"].names == [] and gw.monitors["m"] == []
        r = client.post(
            "/v1/models/m/predict", json={"inputs": [[[[0.0] * 8] * 8]]}, headers={"Authorization": f"Bearer {key}"}
        )
        assert r.status_code == 200
    finally:
        gw.close()
