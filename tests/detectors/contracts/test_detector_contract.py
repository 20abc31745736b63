"""One contract over every registered detector: a false-positive rate that holds on unseen clean data, clear errors,
deterministic scores, and out-of-distribution inputs flagged."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
import torch

from bastion import PGD, Norm, ThreatModel
from bastion.data import Dataset
from bastion.defenses.preprocessing import BitDepth
from bastion.detectors import DETECTORS, FittedThreshold
from bastion.detectors.input import FeatureSqueezing, Mahalanobis, Reconstruction
from bastion.errors import ConfigError, InputValidationError
from bastion.models.zoo import TrainedModel

BUILD: dict[str, Callable[[TrainedModel], FittedThreshold]] = {
    "mahalanobis": lambda m: Mahalanobis(model=m.classifier),
    # 8x8 digits with 17 grey levels: bit depth 2 is the squeezer that leaves them recognisable
    "feature-squeezing": lambda m: FeatureSqueezing(model=m.classifier, squeezers=(BitDepth(2),)),
    "reconstruction": lambda m: Reconstruction(bounds=m.classifier.spec.bounds),
}


def _noise(m: TrainedModel, d: Dataset) -> torch.Tensor:
    return torch.rand(200, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def _pgd(m: TrainedModel, d: Dataset) -> torch.Tensor:
    attack = PGD(ThreatModel(Norm.LINF, 0.2), steps=20)
    return attack.run(m.classifier, d.x_test[:200], d.y_test[:200], generator=torch.Generator().manual_seed(0)).x_adv


# what each detector is for, and the share of it that must be flagged: a naive (non-adaptive) floor that only shows
# the detector works at all; bench/detectors.py (issue 9 point 4) measures naive and adaptive rates side by side
POSITIVES: dict[str, tuple[Callable[[TrainedModel, Dataset], torch.Tensor], float]] = {
    "mahalanobis": (_noise, 0.9),  # out-of-distribution inputs
    "feature-squeezing": (_pgd, 0.3),  # adversarial examples
    "reconstruction": (_noise, 0.9),  # off the data manifold
}


def test_every_detector_is_covered() -> None:
    assert set(BUILD) == set(DETECTORS.names()) == set(POSITIVES)


@pytest.fixture(scope="module", params=sorted(BUILD))
def fitted(request: pytest.FixtureRequest, digits_model: TrainedModel, digits: Dataset) -> FittedThreshold:
    return BUILD[request.param](digits_model).fit(digits.x_train, digits.y_train)


def test_false_positive_rate_holds_on_unseen_clean_data(fitted: FittedThreshold, digits: Dataset) -> None:
    assert fitted.threshold_ == fitted.threshold_  # not NaN
    assert fitted.clean_fpr_ <= fitted.fpr + 0.01
    flagged = float(fitted.predict(digits.x_test).float().mean())
    assert flagged <= 3 * fitted.fpr, flagged  # 360 test inputs the detector never saw


def test_scores_are_per_input_finite_and_deterministic(fitted: FittedThreshold, digits: Dataset) -> None:
    s = fitted.score(digits.x_test[:20])
    assert s.shape == (20,) and s.dtype == torch.float32 and bool(torch.isfinite(s).all())
    assert torch.equal(s, fitted.score(digits.x_test[:20]))
    assert fitted.predict(digits.x_test[:20]).dtype == torch.bool


def test_flags_what_it_is_for(fitted: FittedThreshold, digits_model: TrainedModel, digits: Dataset) -> None:
    make, floor = POSITIVES[fitted.name]
    assert float(fitted.predict(make(digits_model, digits)).float().mean()) >= floor


def test_bad_input_and_misuse_get_clear_errors(fitted: FittedThreshold, digits_model: TrainedModel) -> None:
    with pytest.raises(InputValidationError, match="shape"):
        fitted.score(torch.rand(3, 1, 4, 4))
    with pytest.raises(InputValidationError):
        fitted.score(torch.full((2, 1, 8, 8), float("nan")))
    fresh = BUILD[fitted.name](digits_model)
    with pytest.raises(ConfigError, match="not fitted"):
        fresh.predict(torch.rand(2, 1, 8, 8))
    with pytest.raises(InputValidationError, match="more clean inputs"):
        fresh.fit(torch.rand(30, 1, 8, 8), torch.zeros(30, dtype=torch.long))


def test_settings_are_checked(digits_model: TrainedModel) -> None:
    for name in DETECTORS.names():
        with pytest.raises(ConfigError, match="fpr"):
            dataclasses.replace(BUILD[name](digits_model), fpr=0.0)
