from __future__ import annotations

import math

import pytest

from bastion import ConfigError, Norm, ThreatModel


@pytest.mark.parametrize("eps", [0, -0.1, math.nan, math.inf, "0.1", True])
def test_threat_model_rejects_bad_eps(eps: object) -> None:
    with pytest.raises(ConfigError, match="eps"):
        ThreatModel(eps=eps)  # type: ignore[arg-type]


@pytest.mark.parametrize("bounds", [(1.0, 0.0), (0.0, math.inf), ("a", "b"), (0.0,)])
def test_threat_model_rejects_bad_bounds(bounds: object) -> None:
    with pytest.raises(ConfigError, match="bounds"):
        ThreatModel(bounds=bounds)  # type: ignore[arg-type]


def test_threat_model_resolves_bounds_from_model_when_unset() -> None:
    assert ThreatModel().resolve_bounds((0.0, 255.0)) == (0.0, 255.0)
    assert ThreatModel(bounds=(-1, 1)).resolve_bounds((0.0, 255.0)) == (-1.0, 1.0)


def test_norm_parse() -> None:
    assert ThreatModel(norm="L2").norm is Norm.L2  # type: ignore[arg-type]
    assert Norm.parse("inf") is Norm.LINF
    with pytest.raises(ConfigError, match="unknown norm 'l1'"):
        Norm.parse("l1")
