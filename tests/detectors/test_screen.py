"""Screen: the detectors in front of one model, run as one step."""

from __future__ import annotations

import pytest
import torch

from bastion.data import Dataset
from bastion.detectors.input import Reconstruction
from bastion.detectors.screen import Screen
from bastion.errors import ConfigError


def test_an_unfitted_detector_is_refused_and_no_detectors_flag_nothing() -> None:
    with pytest.raises(ConfigError, match="not fitted"):
        Screen((Reconstruction(),))
    assert Screen.flagged(()).numel() == 0 and len(Screen(())) == 0


def test_flags_are_each_detectors_verdict_and_their_union(digits: Dataset) -> None:
    det = Reconstruction().fit(digits.x_train)
    screen = Screen((det,))
    noise = torch.rand(20, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    (verdict,) = screen(torch.cat([digits.x_test[:20], noise]))
    assert verdict.detector == "reconstruction" and verdict.fpr == det.fpr
    assert torch.equal(verdict.flagged, verdict.scores > det.threshold_)
    assert float(verdict.flagged[20:].float().mean()) >= 0.9 and float(verdict.flagged[:20].float().mean()) <= 0.3
    assert torch.equal(Screen.flagged((verdict,)), verdict.flagged)
