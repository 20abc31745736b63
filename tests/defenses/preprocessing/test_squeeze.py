"""Feature squeezers: what they keep and what they remove."""

from __future__ import annotations

import pytest
import torch

from bastion import ModelSpec, SklearnClassifier
from bastion.defenses.preprocessing import BitDepth, MedianFilter
from bastion.detectors.input import FeatureSqueezing
from bastion.errors import ConfigError


def test_bit_depth_keeps_bounds_and_levels() -> None:
    x = torch.linspace(-1, 1, 101).reshape(1, 101)
    out = BitDepth(2)(x, (-1.0, 1.0))
    assert out.shape == x.shape and float(out.min()) == -1.0 and float(out.max()) == 1.0
    assert sorted({round(v, 4) for v in out.flatten().tolist()}) == [-1.0, -0.3333, 0.3333, 1.0]


def test_median_removes_a_lone_spike_and_keeps_flat_images() -> None:
    flat = torch.full((2, 3, 8, 8), 0.25)
    assert torch.equal(MedianFilter(3)(flat, (0.0, 1.0)), flat)
    spiked = flat.clone()
    spiked[0, 1, 4, 4] = 1.0
    assert torch.equal(MedianFilter(3)(spiked, (0.0, 1.0)), flat)
    assert MedianFilter(2)(torch.rand(4, 1, 8, 8), (0.0, 1.0)).shape == (4, 1, 8, 8)


def test_bad_settings_are_errors() -> None:
    with pytest.raises(ConfigError, match="bits"):
        BitDepth(0)
    with pytest.raises(ConfigError, match="size"):
        MedianFilter(1)
    from sklearn.linear_model import LogisticRegression

    table = SklearnClassifier(
        LogisticRegression().fit(torch.rand(20, 4).numpy(), [0, 1] * 10), ModelSpec(input_shape=(4,), num_classes=2)
    )
    with pytest.raises(ConfigError, match="median filter needs image"):
        FeatureSqueezing(model=table, squeezers=(MedianFilter(2),))
    assert [s.name for s in FeatureSqueezing(model=table)._squeezers] == ["bit-depth-4"]
