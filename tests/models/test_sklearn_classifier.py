from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from bastion import ConfigError, SklearnClassifier, load_dataset


def test_scores_match_the_estimator_and_queries_are_counted() -> None:
    ds = load_dataset("breast-cancer")
    est = LogisticRegression(max_iter=500).fit(ds.x_train.numpy(), ds.y_train.numpy())
    clf = SklearnClassifier(est, ds.spec)
    scores = clf.predict_logits(ds.x_test)
    assert scores.shape == (len(ds.x_test), 2) and scores.dtype == torch.float32
    assert np.array_equal(scores.argmax(1).numpy(), est.predict(ds.x_test.numpy()))
    assert torch.allclose(scores.exp().sum(1), torch.ones(len(ds.x_test)), atol=1e-5)
    assert clf.queries == len(ds.x_test)


def test_unfitted_or_non_probabilistic_estimators_are_refused() -> None:
    ds = load_dataset("breast-cancer")
    with pytest.raises(ConfigError, match="not fitted"):
        SklearnClassifier(LogisticRegression(), ds.spec)
    with pytest.raises(ConfigError, match="predict_proba"):
        SklearnClassifier(object(), ds.spec)
