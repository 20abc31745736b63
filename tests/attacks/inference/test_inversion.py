"""Model inversion: reconstructions of a trained model are recognised by an independent judge, those of an untrained
model of the same architecture are not (the prior alone carries no class), and the queries of the black-box search
are counted."""

from __future__ import annotations

import pytest
import torch

from bastion.attacks.extraction import SubstituteRecipe, Targets, train_substitute
from bastion.attacks.inference.inversion import InversionSettings, invert, judge_agreement, nearest_similarity
from bastion.data import Dataset
from bastion.errors import ConfigError
from bastion.models import SklearnClassifier
from bastion.models.torch import TorchClassifier
from bastion.models.zoo import TrainedModel, build


@pytest.fixture(scope="module")
def judge(digits: Dataset) -> TorchClassifier:
    """Trained on the second half of the test split: data neither the model nor the attacker's prior saw."""
    x, y = digits.x_test[180:], digits.y_test[180:]
    return train_substitute(digits.spec, x, Targets(y, None, False), SubstituteRecipe(epochs=40), seed=5)


def test_white_box_inversion_is_recognised_and_an_untrained_model_is_not(
    digits_model: TrainedModel, digits: Dataset, judge: TorchClassifier
) -> None:
    aux = digits.x_test[:180]  # the attacker's public data
    s = InversionSettings(steps=150, restarts=3)
    r = invert(digits_model.classifier, settings=s, aux=aux)
    agree, per_class = judge_agreement(judge, r)
    assert r.images.shape == (10, 3, 1, 8, 8) and per_class.shape == (10,)
    assert float(r.confidence.mean()) > 0.9
    torch.manual_seed(0)
    untrained = TorchClassifier(build("digits-cnn", (1, 8, 8), 10).eval(), digits.spec)
    control, _ = judge_agreement(judge, invert(untrained, settings=s, aux=aux))
    assert agree >= 0.8 and control <= 0.4, (agree, control)
    sim = nearest_similarity(r, digits.x_train, digits.y_train)
    assert bool((sim > 0.5).all())


def test_black_box_inversion_counts_its_queries(digits_model: TrainedModel, digits: Dataset, judge) -> None:  # type: ignore[no-untyped-def]
    s = InversionSettings(steps=60, restarts=2, queries_per_step=10)
    r = invert(digits_model.classifier, method="black-box", settings=s, aux=digits.x_test[:180], classes=[0, 3, 7])
    assert r.queries == 60 * 2 * 10 * 3 * 2 + 3 * 2  # probes, plus the final confidence check
    agree, _ = judge_agreement(judge, r)
    assert agree >= 0.5 and r.classes == (0, 3, 7)


def test_nearest_similarity_of_a_real_input_is_one(digits: Dataset) -> None:
    from bastion.attacks.inference.inversion import InversionResult

    x = digits.x_train[:1].unsqueeze(0)  # (1 class, 1 restart, 1, 8, 8)
    r = InversionResult("copy", (int(digits.y_train[0]),), x, torch.ones(1, 1), 0.0, 0)
    assert float(nearest_similarity(r, digits.x_train, digits.y_train)[0]) == pytest.approx(1.0)


def test_bad_settings_are_refused(digits_model: TrainedModel, digits: Dataset) -> None:
    from sklearn.linear_model import LogisticRegression

    logreg = SklearnClassifier(
        LogisticRegression(max_iter=200).fit(digits.x_train.flatten(1).numpy(), digits.y_train.numpy()), digits.spec
    )
    with pytest.raises(ConfigError, match="gradients"):
        invert(logreg)
    with pytest.raises(ConfigError, match="classes"):
        invert(digits_model.classifier, classes=[10])
    with pytest.raises(ConfigError, match="steps"):
        InversionSettings(steps=0)
