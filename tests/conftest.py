"""Shared fixtures: the digits data and a tiny reference CNN trained once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bastion.data import Dataset, load_dataset
from bastion.models.zoo import TrainedModel, save_model, train_model

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits() -> Dataset:
    return load_dataset("digits")


@pytest.fixture(scope="session")
def digits_model(digits: Dataset) -> TrainedModel:
    """The digits reference CNN, 15 epochs, seed 0 (about 95% test accuracy, trained in a few seconds)."""
    return train_model(digits, epochs=15, seed=0)


@pytest.fixture(scope="session")
def digits_model_file(digits_model: TrainedModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("zoo") / "digits.safetensors"
    save_model(digits_model.module, digits_model.card, path)
    return path


@pytest.fixture()
def batch(digits: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """64 test inputs and labels."""
    return digits.x_test[:64].clone(), digits.y_test[:64].clone()
