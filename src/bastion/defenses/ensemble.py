"""Ensembles: several models answering as one, with their disagreement measured per input."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from bastion.errors import ConfigError
from bastion.models.base import Classifier, ModelSpec


@dataclass(frozen=True)
class EnsembleOutput:
    """Mean probabilities (N, K) and, per input, the fraction of members whose top class differs from the ensemble's."""

    probs: Tensor
    disagreement: Tensor


class Ensemble:
    """Average the members' probabilities; a classifier itself, so attacks and the gateway treat it like one model.

    Averaging probabilities (not logits) keeps each member's vote bounded, so one overconfident member cannot
    dominate. Disagreement between members is a cheap signal of inputs off the data manifold, which adversarial
    examples crafted against one member often are (Tramèr et al., "Ensemble adversarial training", ICLR 2018, on
    transfer between models). Members must share the input shape, classes and bounds.
    """

    def __init__(self, members: Sequence[Classifier]) -> None:
        if not members:
            raise ConfigError("an ensemble needs at least one member")
        first = members[0].spec
        for i, m in enumerate(members[1:], start=1):
            s = m.spec
            if (s.input_shape, s.num_classes, tuple(s.bounds)) != (
                first.input_shape,
                first.num_classes,
                tuple(first.bounds),
            ):
                raise ConfigError(
                    f"ensemble member {i} has input {s.input_shape}, {s.num_classes} classes, bounds {s.bounds}; "
                    f"member 0 has {first.input_shape}, {first.num_classes}, {first.bounds}: they must match"
                )
        self.members = list(members)
        self.spec: ModelSpec = first
        self.queries = 0

    def predict(self, x: Tensor) -> EnsembleOutput:
        """Mean probabilities and per-input disagreement; counts N queries (each member counts its own too)."""
        if len(self.members) == 1:  # the common case: one model, nothing to average or disagree about
            single = torch.softmax(self.members[0].predict_logits(x).float(), dim=1)
            self.queries += int(x.shape[0])
            return EnsembleOutput(single, torch.zeros(single.shape[0]))
        probs = torch.stack([torch.softmax(m.predict_logits(x).float(), dim=1) for m in self.members])
        mean = probs.mean(0)
        top = mean.argmax(1)
        disagreement = (probs.argmax(2) != top.unsqueeze(0)).float().mean(0)
        self.queries += int(x.shape[0])
        return EnsembleOutput(mean, disagreement)

    def predict_logits(self, x: Tensor) -> Tensor:
        """Log of the mean probabilities: a softmax of these gives the ensemble's probabilities back."""
        return self.predict(x).probs.clamp_min(1e-12).log()

    def __len__(self) -> int:
        return len(self.members)
