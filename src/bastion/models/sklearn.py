"""Black-box adapter for a fitted scikit-learn estimator with ``predict_proba``."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from bastion._validate import raise_if, tensor_problems
from bastion.errors import ConfigError
from bastion.types import ModelSpec


class SklearnClassifier:
    """Scores from a fitted scikit-learn classifier, as log-probabilities ``(N, K)``.

    Inputs are flattened to ``(N, prod(input_shape))`` before ``predict_proba``. Log-probabilities are logits up to a
    per-row constant, so argmax and margin-based attacks see the same decisions the estimator makes.
    """

    def __init__(self, estimator: Any, spec: ModelSpec) -> None:
        if not hasattr(estimator, "predict_proba"):
            raise ConfigError(
                f"{type(estimator).__name__} has no predict_proba; use a probabilistic classifier "
                "(e.g. LogisticRegression, RandomForestClassifier, SVC(probability=True))"
            )
        classes = getattr(estimator, "classes_", None)
        if classes is None:
            raise ConfigError(f"{type(estimator).__name__} is not fitted; call fit() first")
        if len(classes) != spec.num_classes:
            raise ConfigError(f"estimator knows {len(classes)} classes but spec.num_classes is {spec.num_classes}")
        self.estimator = estimator
        self.spec = spec
        self.queries = 0

    def predict_logits(self, x: Tensor) -> Tensor:
        raise_if(tensor_problems(x, name="x", input_shape=self.spec.input_shape), "model input")
        self.queries += int(x.shape[0])
        flat = x.detach().reshape(x.shape[0], -1).cpu().numpy().astype(np.float64, copy=False)
        proba = np.asarray(self.estimator.predict_proba(flat), dtype=np.float64)
        return torch.from_numpy(np.log(np.clip(proba, 1e-12, 1.0))).to(torch.float32)

    def __repr__(self) -> str:
        return f"SklearnClassifier({type(self.estimator).__name__}, spec={self.spec})"
