"""Mahalanobis detector specifics: labels, layers, and what it reads."""

from __future__ import annotations

import pytest
import torch

from bastion.data import Dataset
from bastion.detectors.input import Mahalanobis
from bastion.errors import ConfigError, InputValidationError
from bastion.models.features import penultimate
from bastion.models.zoo import TrainedModel


def test_reads_the_input_of_the_last_linear_layer(digits_model: TrainedModel, digits: Dataset) -> None:
    heads = [m for m in digits_model.module.modules() if isinstance(m, torch.nn.Linear)]
    f = penultimate(digits_model.classifier)(digits.x_test[:300])
    assert f.shape == (300, heads[-1].in_features)
    with torch.no_grad():  # the head applied to those features gives the model's logits back
        assert torch.allclose(heads[-1](f), digits_model.classifier.predict_logits(digits.x_test[:300]), atol=1e-5)


def test_needs_labels_every_class_and_a_real_layer(digits_model: TrainedModel, digits: Dataset) -> None:
    with pytest.raises(InputValidationError, match="labels"):
        Mahalanobis(model=digits_model.classifier).fit(digits.x_train)
    few = digits.y_train != 3
    with pytest.raises(ConfigError, match=r"class\(es\) \[3\]"):
        Mahalanobis(model=digits_model.classifier).fit(digits.x_train[few], digits.y_train[few])
    with pytest.raises(ConfigError, match="no layer 'nope'"):
        Mahalanobis(model=digits_model.classifier, layer="nope")
    with pytest.raises(ConfigError, match="model="):
        Mahalanobis()
