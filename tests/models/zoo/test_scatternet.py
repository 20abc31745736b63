"""ScatterNet features: kymatio imports under current SciPy, the transform is fixed and nearly shift-invariant."""

from __future__ import annotations

import math

import pytest
import torch

from bastion.errors import ConfigError
from bastion.models.zoo.nets import build
from bastion.models.zoo.scatternet import ScatterFeatures, _legacy_sph_harm


def test_the_scipy_shim_keeps_the_old_sph_harm_signature() -> None:
    # Y_1^0 at polar angle 0 is sqrt(3 / 4 pi); Y_1^1 at the equator, azimuth 0, is -sqrt(3 / 8 pi)
    assert complex(_legacy_sph_harm(0, 1, 0.7, 0.0)).real == pytest.approx(math.sqrt(3 / (4 * math.pi)))
    assert complex(_legacy_sph_harm(1, 1, 0.0, math.pi / 2)).real == pytest.approx(-math.sqrt(3 / (8 * math.pi)))


def test_features_have_81_channels_at_a_quarter_resolution_and_shrug_off_a_one_pixel_shift() -> None:
    f = ScatterFeatures(1, 28)
    torch.manual_seed(0)
    x = torch.zeros(3, 1, 28, 28)
    x[0, 0, 8:20, 10:16] = 1.0  # a bar
    x[1] = torch.roll(x[0], 1, dims=2)  # the same bar one pixel lower
    x[2, 0, 12:16, 4:24] = 1.0  # another shape
    s = f(x)
    assert s.shape == (3, 81, 7, 7)
    shifted = float((s[0] - s[1]).norm() / s[0].norm())
    other = float((s[0] - s[2]).norm() / s[0].norm())
    assert shifted < 0.5 * other, (shifted, other)


def test_scatternet_linear_trains_only_its_head_and_checks_its_input_size() -> None:
    m = build("scatternet-linear", (1, 28, 28), 10)
    assert not list(m.fixed_features.parameters())
    assert sum(p.numel() for p in m.head.parameters()) == 81 * 49 * 10 + 10
    with pytest.raises(ConfigError, match="divisible by 4"):
        build("scatternet-linear", (1, 30, 30), 10)
    with pytest.raises(ConfigError, match="must divide"):
        build("scatternet-linear", (1, 28, 28), 10, {"groups": 10})
    with pytest.raises(ConfigError, match="at least 16x16"):
        build("dp-cnn", (1, 8, 8), 10)
