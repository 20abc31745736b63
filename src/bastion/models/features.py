"""Intermediate features of a differentiable model: what detectors that model a network's representation read."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from bastion.errors import ConfigError


def feature_layer(module: nn.Module, layer: str | None = None) -> tuple[str, nn.Module]:
    """The module whose input is taken as the features: ``layer`` by name, else the last ``nn.Linear`` (the
    classifier head, whose input is the penultimate representation)."""
    named = dict(module.named_modules())
    if layer is not None:
        if layer not in named:
            linear = [n for n, m in named.items() if isinstance(m, nn.Linear)]
            raise ConfigError(f"the model has no layer {layer!r}; its linear layers are: {', '.join(linear) or 'none'}")
        return layer, named[layer]
    last = [(n, m) for n, m in named.items() if isinstance(m, nn.Linear)]
    if not last:
        raise ConfigError(
            "the model has no nn.Linear head to read penultimate features from; name a layer= whose input to use"
        )
    return last[-1]


_active = threading.local()


def active_taps(classifier: object) -> list[tuple[nn.Module, list[Tensor]]]:
    """The (layer, sink) pairs of the taps open on ``classifier`` in the calling thread: a classifier that runs
    without PyTorch's forward hooks (onnxruntime, ``bastion.models.runtime``) appends the layer's input to each sink
    itself."""
    return [(target, got) for owner, target, got in getattr(_active, "taps", ()) if owner is classifier]


class FeatureTap:
    """Records the (N, D) input of one layer of a TorchClassifier's module during whatever forward passes run
    inside :meth:`capture` *in the calling thread*: a caller that runs the model anyway reads the features without a
    second pass, and concurrent callers (the gateway's request threads) never read each other's features."""

    def __init__(self, classifier: object, layer: str | None = None) -> None:
        module = getattr(classifier, "module", None)
        if not isinstance(module, nn.Module) or not hasattr(classifier, "logits"):
            raise ConfigError(
                f"features need a differentiable torch model (a TorchClassifier), got {type(classifier).__name__}"
            )
        self.classifier = classifier
        _, self.target = feature_layer(module, layer)

    @contextmanager
    def capture(self) -> Iterator[list[Tensor]]:
        got: list[Tensor] = []
        owner = threading.get_ident()

        def hook(_m: nn.Module, args: tuple[Tensor, ...]) -> None:
            if threading.get_ident() == owner:
                got.append(args[0].flatten(1))

        handle = self.target.register_forward_pre_hook(hook)
        entry = (self.classifier, self.target, got)
        taps = _active.__dict__.setdefault("taps", [])
        taps.append(entry)
        try:
            yield got
        finally:
            handle.remove()
            taps.remove(entry)


def penultimate(classifier: object, layer: str | None = None, *, grad: bool = False) -> Callable[[Tensor], Tensor]:
    """A function mapping inputs (N, *shape) to the (N, D) input of the model's head (or of ``layer``), computed
    with one forward pass of ``classifier`` (a TorchClassifier: its normalisation and chunking apply); with
    ``grad`` the features stay differentiable in the inputs (for adaptive attacks)."""
    tap = FeatureTap(classifier, layer)

    def features(x: Tensor) -> Tensor:
        with tap.capture() as captured, torch.set_grad_enabled(grad):
            classifier.logits(x)  # type: ignore[attr-defined]
        return torch.cat(captured)

    return features
