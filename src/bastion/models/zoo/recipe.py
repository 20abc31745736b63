"""How a model was trained, as data: a zoo architecture and its Adam settings, read from a card or stated.

Attacks that must train models the way the target was trained (reference models for membership inference, a
poisoned copy for a poisoning assessment) and defenses that retrain (cleaning) share it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from torch import Tensor

from bastion._progress import Progress
from bastion.errors import ConfigError


@dataclass(frozen=True)
class Recipe:
    """How the target was trained, for its reference models: a zoo architecture and its Adam settings.

    ``from_card`` reads them from a Bastion model card; for a user's own model, name the closest zoo architecture
    and the settings it was trained with (a mismatched recipe weakens the attack, it does not invalidate it)."""

    architecture: str
    arch_params: dict[str, Any] = field(default_factory=dict)
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        problems = []
        if not isinstance(self.epochs, int) or isinstance(self.epochs, bool) or self.epochs < 1:
            problems.append(f"epochs must be an int >= 1, got {self.epochs!r}")
        if not isinstance(self.batch_size, int) or isinstance(self.batch_size, bool) or self.batch_size < 1:
            problems.append(f"batch_size must be an int >= 1, got {self.batch_size!r}")
        if not isinstance(self.lr, (int, float)) or not 0 < self.lr < 10:
            problems.append(f"lr must be in (0, 10), got {self.lr!r}")
        if not isinstance(self.weight_decay, (int, float)) or self.weight_decay < 0:
            problems.append(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if problems:
            raise ConfigError("invalid reference-model recipe", problems=problems)

    @classmethod
    def from_card(cls, card: Any) -> Recipe:
        """The recipe a Bastion card records (architecture, epochs, Adam's lr, batch size and weight decay)."""
        t = dict(getattr(card, "training", {}) or {})
        if t.get("optimizer", "adam") != "adam":
            raise ConfigError(
                f"model {card.name} was trained with {t.get('optimizer')!r}; reference models need a stated recipe "
                "(pass a Recipe with the closest zoo architecture and Adam settings)"
            )
        return cls(
            architecture=card.architecture,
            arch_params=dict(card.arch_params),
            epochs=int(card.epochs),
            batch_size=int(t.get("batch_size", 128)),
            lr=float(t.get("lr", 1e-3)),
            weight_decay=float(t.get("weight_decay", 0.0)),
        )

    @classmethod
    def for_data(cls, spec: Any, name: str = "", *, epochs: int = 10) -> Recipe:
        """A reasonable recipe for data nobody trained yet: the dataset's reference net when it is a built-in,
        else a CNN for square images (digits-cnn up to 16 pixels, fmnist-cnn above) and an MLP for anything else."""
        from bastion.models.zoo.nets import DEFAULT_ARCHITECTURE

        if name in DEFAULT_ARCHITECTURE:
            return cls(DEFAULT_ARCHITECTURE[name], epochs=epochs)
        shape = tuple(spec.input_shape)
        if len(shape) == 3 and shape[1] == shape[2]:
            return cls("digits-cnn" if shape[1] <= 16 else "fmnist-cnn", epochs=epochs)
        return cls("tabular-mlp", epochs=epochs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "architecture": self.architecture,
            "arch_params": dict(self.arch_params),
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
        }


def train_recipe(
    recipe: Recipe,
    dataset: Any,
    x: Tensor,
    y: Tensor,
    *,
    seed: int = 0,
    name: str | None = None,
    progress: Progress | None = None,
) -> Any:
    """A :class:`~bastion.models.zoo.train.TrainedModel` trained by ``recipe`` on ``(x, y)``; ``dataset`` gives the
    input contract and the test split its card's accuracy is measured on."""
    from bastion.models.zoo.train import train_model

    return train_model(
        replace(dataset, x_train=x, y_train=y),
        architecture=recipe.architecture,
        arch_params=dict(recipe.arch_params),
        epochs=recipe.epochs,
        seed=seed,
        batch_size=recipe.batch_size,
        lr=recipe.lr,
        weight_decay=recipe.weight_decay,
        name=name,
        progress=progress,
    )
