"""MagNet's reconstruction detector on a table (the MLP autoencoder) and its settings."""

from __future__ import annotations

import pytest
import torch

from bastion.detectors.input import Reconstruction
from bastion.errors import ConfigError


def test_a_table_gets_an_autoencoder_too() -> None:
    from sklearn.datasets import load_breast_cancer

    x = torch.tensor(load_breast_cancer().data, dtype=torch.float32)
    x = (x - x.min(0).values) / (x.max(0).values - x.min(0).values)  # the user's scaling into [0, 1]
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    det = Reconstruction(epochs=60).fit(x[perm[:450]])
    assert float(det.predict(x[perm[450:]]).float().mean()) <= 0.15  # 119 rows it never saw, 5% target
    noise = torch.rand(200, 30, generator=torch.Generator().manual_seed(1))
    assert float(det.predict(noise).float().mean()) >= 0.9


def test_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="bounds"):
        Reconstruction(bounds=(1.0, 1.0))
    with pytest.raises(ConfigError, match="epochs"):
        Reconstruction(epochs=0)
