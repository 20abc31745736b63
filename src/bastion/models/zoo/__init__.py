"""Bastion's model zoo: reference architectures, seeded training, and the safetensors + card format."""

from __future__ import annotations

from bastion.models.zoo.card import LoadedModel, ModelCard, load_model, read_card, save_model
from bastion.models.zoo.nets import ARCHITECTURES, DEFAULT_ARCHITECTURE, build
from bastion.models.zoo.train import TrainedModel, accuracy, train_model

__all__ = [
    "ARCHITECTURES",
    "DEFAULT_ARCHITECTURE",
    "LoadedModel",
    "ModelCard",
    "TrainedModel",
    "accuracy",
    "build",
    "load_model",
    "read_card",
    "save_model",
    "train_model",
]
