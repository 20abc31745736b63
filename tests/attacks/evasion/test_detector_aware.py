"""The adaptive attack on model and detector together: it must beat what a naive attack leaves flagged."""

from __future__ import annotations

import pytest
import torch

from bastion import PGD, Norm, ThreatModel
from bastion.attacks.evasion.detector_aware import DetectorAwarePGD
from bastion.data import Dataset
from bastion.defenses.preprocessing import BitDepth
from bastion.detectors.input import FeatureSqueezing, Mahalanobis, Reconstruction
from bastion.errors import ConfigError
from bastion.models.zoo import TrainedModel

THREAT = ThreatModel(Norm.LINF, 0.2)


@pytest.fixture(scope="module")
def squeezing(digits_model: TrainedModel, digits: Dataset) -> FeatureSqueezing:
    return FeatureSqueezing(model=digits_model.classifier, squeezers=(BitDepth(2),)).fit(digits.x_train)


def test_bpda_through_squeezing_hides_what_naive_pgd_leaves_flagged(
    squeezing: FeatureSqueezing, digits_model: TrainedModel, digits: Dataset
) -> None:
    clf, x, y = digits_model.classifier, digits.x_test[:150], digits.y_test[:150]
    naive = PGD(THREAT, steps=20).run(clf, x, y, generator=torch.Generator().manual_seed(0)).x_adv
    fooled = clf.predict_logits(naive).argmax(1) != y
    naive_evaded = int((fooled & ~squeezing.predict(naive)).sum())
    res = DetectorAwarePGD(THREAT, squeezing, steps=30).run(clf, x, y, generator=torch.Generator().manual_seed(0))
    # judged afresh by the deployed model and detector, not by the attack's own bookkeeping
    fooled_a = clf.predict_logits(res.x_adv).argmax(1) != y
    evaded = fooled_a & ~squeezing.predict(res.x_adv)
    assert torch.equal(evaded, res.hidden)
    assert int(evaded.sum()) >= naive_evaded + 30, (naive_evaded, int(evaded.sum()))
    assert float((res.x_adv - x).abs().max()) <= THREAT.eps + 1e-6
    assert float(res.x_adv.min()) >= 0 and float(res.x_adv.max()) <= 1


@pytest.mark.parametrize("make", ["mahalanobis", "reconstruction"])
def test_exact_gradients_of_differentiable_detectors_match_their_scores(
    make: str, digits_model: TrainedModel, digits: Dataset
) -> None:
    clf = digits_model.classifier
    det = (
        Mahalanobis(model=clf).fit(digits.x_train, digits.y_train)
        if make == "mahalanobis"
        else Reconstruction(epochs=5).fit(digits.x_train)
    )
    x = digits.x_test[:20].clone().requires_grad_(True)
    s = det.score_with_grad(x)
    assert torch.allclose(s.detach(), det.score(x.detach()), rtol=1e-4, atol=1e-5)
    (g,) = torch.autograd.grad(s.sum(), x)
    assert float(g.abs().sum()) > 0


def test_settings_are_checked(squeezing: FeatureSqueezing) -> None:
    with pytest.raises(ConfigError, match="untargeted"):
        DetectorAwarePGD(ThreatModel(Norm.LINF, 0.1, targeted=True), squeezing)
    with pytest.raises(ConfigError, match="weights"):
        DetectorAwarePGD(THREAT, squeezing, weights=(0.0,))
