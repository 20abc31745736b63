"""The two protocols attacks are written against (``ModelSpec`` lives in :mod:`bastion.types`)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from bastion._torch import batch_slices
from bastion.types import ModelSpec

__all__ = ["Classifier", "DifferentiableClassifier", "ModelSpec", "model_digest", "predict_labels"]


@runtime_checkable
class Classifier(Protocol):
    """Black-box access: scores for a batch. Enough for score- and label-based attacks and for extraction."""

    spec: ModelSpec
    queries: int

    def predict_logits(self, x: Tensor) -> Tensor:
        """Scores ``(N, K)`` for inputs ``(N, *spec.input_shape)``; no gradient. Adds N to ``queries``."""
        ...


@runtime_checkable
class DifferentiableClassifier(Classifier, Protocol):
    """White-box access: logits differentiable with respect to the input, with no mode side effects."""

    device: torch.device

    def logits(self, x: Tensor) -> Tensor:
        """Differentiable logits ``(N, K)``. Adds N to ``queries``."""
        ...


def predict_labels(model: Classifier, x: Tensor, *, batch_size: int = 1024) -> Tensor:
    """Top-1 labels of ``model`` on ``x``, computed in batches (on the CPU, as int64)."""
    out = [model.predict_logits(x[s]).argmax(1).cpu() for s in batch_slices(x.shape[0], batch_size)]
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


def model_digest(model: Classifier) -> str:
    """A sha256 that changes when the model's weights change: over a torch module's parameters and buffers, else
    over the adapter's own ``digest`` attribute, else over its type and spec (all an opaque model offers)."""
    import hashlib

    own = getattr(model, "digest", None)
    if isinstance(own, str) and own:
        return own
    h = hashlib.sha256(f"{type(model).__name__}|{model.spec.to_dict()}".encode())
    module = getattr(model, "module", None)
    if isinstance(module, torch.nn.Module):
        for name, t in sorted(module.state_dict().items()):
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
