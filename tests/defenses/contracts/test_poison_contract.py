"""One contract over every registered poison detector: one finite score per sample, the same scores for the same
seed, and a cluster planted apart from a class ranked above the class (AUC > 0.75)."""

from __future__ import annotations

import pytest
import torch

from bastion.defenses.data import POISON_DETECTORS, detect_poison


def _class(n: int, planted: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n + planted, 32, generator=g)
    x[:n, :4] *= 3.0  # a clean class has a few dominant directions of its own
    shift = torch.zeros(32)
    shift[7] = 12.0
    x[n:] += shift
    truth = torch.zeros(n + planted, dtype=torch.bool)
    truth[n:] = True
    return x, truth


def _auc(scores: torch.Tensor, truth: torch.Tensor) -> float:
    pos, neg = scores[truth], scores[~truth]
    return float((pos[:, None] > neg[None, :]).float().mean())


@pytest.mark.parametrize("name", POISON_DETECTORS.names())
def test_poison_detector_contract(name: str) -> None:
    det = POISON_DETECTORS.get(name)()
    assert det.name == name and det.paper
    x, truth = _class(600, 90, 0)
    s = det.scores(x, seed=0)
    assert s.shape == (690,) and bool(torch.isfinite(s).all())
    assert torch.equal(s, det.scores(x, seed=0))
    assert _auc(s, truth) > 0.75  # activation clustering: 0.81 (its 2-means cuts the clean bulk too)


def test_the_decision_rule_names_the_attacked_class_and_its_samples() -> None:
    feats, labels, truth = [], [], []
    for label in range(4):
        x, t = _class(500, 80 if label == 2 else 0, label)
        feats.append(x)
        labels.append(torch.full((x.shape[0],), label))
        truth.append(t)
    f, y, t = torch.cat(feats), torch.cat(labels), torch.cat(truth)
    report = detect_poison(f, y, detector="projection-gap")
    assert report.attacked == [2]
    assert torch.equal(report.flagged, t)
    assert [c.flagged for c in report.classes] == [0, 0, 80, 0]
    assert report.to_dict()["attacked_classes"] == [2]


def test_bad_arguments_are_refused() -> None:
    from bastion.errors import ConfigError, UnknownNameError

    x = torch.randn(100, 8)
    with pytest.raises(ConfigError, match=r"\(N,\) tensor"):
        detect_poison(x, torch.zeros(50, dtype=torch.long))
    with pytest.raises(ConfigError, match="robust standard deviations"):
        detect_poison(x, torch.zeros(100, dtype=torch.long), gap=0)
    with pytest.raises(UnknownNameError, match="poison detector"):
        detect_poison(x, torch.zeros(100, dtype=torch.long), detector="magic")
