"""Classifier protocols and adapters: PyTorch (white-box), scikit-learn and HTTP (black-box)."""

from __future__ import annotations

from bastion.models.base import Classifier, DifferentiableClassifier, ModelSpec, predict_labels
from bastion.models.http import HttpClassifier
from bastion.models.onnx import OnnxClassifier
from bastion.models.sklearn import SklearnClassifier
from bastion.models.torch import TorchClassifier

__all__ = [
    "Classifier",
    "DifferentiableClassifier",
    "HttpClassifier",
    "ModelSpec",
    "OnnxClassifier",
    "SklearnClassifier",
    "TorchClassifier",
    "predict_labels",
]
