"""The cascade runs each attack on the survivors only, reports contributions and resumes from a checkpoint."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from bastion import FGSM, PGD, ArtifactError, ConfigError, Norm, ThreatModel
from bastion.attacks import APGD, AutoAttack, Cascade
from bastion.data import Dataset
from bastion.models import TorchClassifier
from bastion.models.zoo import TrainedModel


def _seed() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def test_cascade_attacks_only_survivors_and_counts_contributions(digits_model: TrainedModel, digits: Dataset) -> None:
    x, y = digits.x_test, digits.y_test
    threat = ThreatModel(Norm.LINF, 0.1)
    fgsm_alone = FGSM(threat).run(digits_model.classifier, x, y)
    r = Cascade((FGSM(threat), PGD(threat, steps=20))).run(digits_model.classifier, x, y, generator=_seed())
    assert r.contributions["fgsm"] == int(fgsm_alone.success.sum())
    assert sum(r.contributions.values()) == int(r.success.sum())
    assert torch.equal(r.broken_by == 0, fgsm_alone.success)
    survivors = int((~fgsm_alone.success).sum())
    pgd_only_on_survivors = r.queries[~fgsm_alone.success]
    assert bool((r.queries[fgsm_alone.success] == 2).all())  # FGSM's one step plus its check, nothing more
    assert pgd_only_on_survivors.numel() == survivors and bool((pgd_only_on_survivors > 2).all())
    assert r.success_rate >= fgsm_alone.success_rate


def test_cascade_resumes_from_its_checkpoint(digits_model: TrainedModel, digits: Dataset, tmp_path: Path) -> None:
    x, y = digits.x_test[:100], digits.y_test[:100]
    threat = ThreatModel(Norm.LINF, 0.1)
    cascade = Cascade((FGSM(threat), PGD(threat, steps=10)))
    ckpt = tmp_path / "state.safetensors"
    first = cascade.run(digits_model.classifier, x, y, generator=_seed(), checkpoint=ckpt)
    again = cascade.run(digits_model.classifier, x, y, generator=_seed(), checkpoint=ckpt)
    assert first.resumed_from == 0 and again.resumed_from == 2
    assert torch.equal(again.x_adv, first.x_adv) and again.contributions == first.contributions
    with pytest.raises(ArtifactError, match="belongs to other inputs"):
        cascade.run(digits_model.classifier, x[:50], y[:50], checkpoint=ckpt)
    wider = ThreatModel(Norm.LINF, 0.2)  # same attacks and names, another budget: never resumed
    with pytest.raises(ArtifactError, match="budgets"):
        Cascade((FGSM(wider), PGD(wider, steps=10))).run(digits_model.classifier, x, y, checkpoint=ckpt)
    with pytest.raises(ArtifactError, match="attack settings"):
        Cascade((FGSM(threat), PGD(threat, steps=11))).run(digits_model.classifier, x, y, checkpoint=ckpt)
    other = TorchClassifier(copy.deepcopy(digits_model.module), digits.spec)
    with torch.no_grad():
        next(other.module.parameters()).add_(0.01)
    with pytest.raises(ArtifactError, match="another model"):
        cascade.run(other, x, y, checkpoint=ckpt)


def test_cascade_refuses_targeted_members_and_empty_tuples() -> None:
    with pytest.raises(ConfigError, match="non-empty tuple"):
        Cascade(())
    with pytest.raises(ConfigError, match="untargeted"):
        Cascade((FGSM(ThreatModel(targeted=True)),))


def test_autoattack_is_at_least_as_strong_as_its_first_component(digits_model: TrainedModel, digits: Dataset) -> None:
    x, y = digits.x_test, digits.y_test
    threat = ThreatModel(Norm.LINF, 0.1)
    ce = APGD(threat, steps=30).run(digits_model.classifier, x, y, generator=_seed())
    aa = AutoAttack(threat, steps=30, n_target_classes=3, square_queries=200).run(
        digits_model.classifier, x, y, generator=_seed()
    )
    assert int((ce.success & ~aa.success).sum()) == 0
    contrib = aa.details["contributions"]
    assert list(contrib) == ["apgd-ce", "apgd-t", "square"]
    assert sum(contrib.values()) == int(aa.success.sum())
    assert contrib["apgd-ce"] == int(ce.success.sum())
