"""A small MLP with a polynomial activation, for encrypted inference: ``W2 p(W1 x + b1) + b2``, p of degree 2.

CKKS evaluates additions and multiplications only, so an activation must be a polynomial. Two ways in:

- train the network with the polynomial itself (:class:`PolyActivation`, e.g. the square of CryptoNets, Gilad-Bachrach
  et al. 2016): the encrypted model then computes exactly the function that was trained;
- convert a trained MLP: its ReLU, sigmoid or tanh is replaced by the least-squares degree-2 polynomial on the range
  its inputs take over the training data (:func:`convert_mlp`), and the plaintext accuracy of that polynomial version
  is reported before anything is encrypted, since the approximation can cost accuracy.

Evaluated in the feature-wise batch packing: hidden unit ``i`` is one ciphertext of ``W1_i . x + b1_i``, its
activation ``(a h + b) h + c`` costs two levels (one ciphertext-ciphertext product, which needs relinearisation
keys), and the output layer one more: depth 4 in all, which :func:`~bastion.defenses.encrypted.params.choose_parameters`
fits in N = 8192 at 128-bit security.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from bastion.errors import ConfigError

DEPTH = 4  # layer 1, the activation's two products, layer 2


class PolyActivation(nn.Module):
    """``a x^2 + b x + c`` (the square, by default): an activation CKKS can evaluate."""

    def __init__(self, a: float = 1.0, b: float = 0.0, c: float = 0.0) -> None:
        super().__init__()
        self.a, self.b, self.c = float(a), float(b), float(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.a * x + self.b) * x + self.c

    def extra_repr(self) -> str:
        return f"a={self.a:.4g}, b={self.b:.4g}, c={self.c:.4g}"


@dataclass(frozen=True)
class PolyMLPWeights:
    """The plaintext weights of ``W2 p(W1 x + b1) + b2`` (float64) with ``p(h) = (a h + b) h + c``."""

    w1: np.ndarray  # (hidden, d)
    b1: np.ndarray
    poly: tuple[float, float, float]  # a, b, c
    w2: np.ndarray  # (k, hidden)
    b2: np.ndarray

    @property
    def n_features(self) -> int:
        return int(self.w1.shape[1])

    @property
    def n_outputs(self) -> int:
        return int(self.w2.shape[0])

    @property
    def hidden(self) -> int:
        return int(self.w1.shape[0])

    def plaintext(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(x.shape[0], -1).double().numpy()
        a, b, c = self.poly
        h = flat @ self.w1.T + self.b1
        return torch.from_numpy(((a * h + b) * h + c) @ self.w2.T + self.b2)


def _layers(module: nn.Module) -> list[nn.Module]:
    """The leaf modules that compute something (Flatten, Identity and Dropout at inference do not)."""
    leaves = [m for m in module.modules() if not list(m.children())]
    return [m for m in leaves if not isinstance(m, (nn.Flatten, nn.Identity, nn.Dropout))]


def convert_mlp(
    module: nn.Module, x_fit: torch.Tensor | None = None, *, relu_range: tuple[float, float] | None = None
) -> PolyMLPWeights:
    """Read an MLP ``Linear -> activation -> Linear`` (Flatten, Dropout and Identity allowed around them).

    The activation may be a :class:`PolyActivation` (kept as it is) or a ReLU, which is replaced by the least-squares
    quadratic on the range of its inputs over ``x_fit`` (or ``relu_range``). Anything else is refused, naming the
    layer: a convolution, a second hidden layer (too deep for the parameters), another activation."""
    layers = _layers(module)
    kinds = [type(m).__name__ for m in layers]
    if len(layers) != 3 or not isinstance(layers[0], nn.Linear) or not isinstance(layers[2], nn.Linear):
        raise ConfigError(
            f"encrypted inference converts Linear -> activation -> Linear (one hidden layer); this model has "
            f"{' -> '.join(kinds) or 'no layers'}"
        )
    act = layers[1]
    l1, l2 = layers[0], layers[2]
    w1 = l1.weight.detach().double().numpy().copy()
    b1 = (l1.bias.detach().double().numpy() if l1.bias is not None else np.zeros(w1.shape[0])).copy()
    w2 = l2.weight.detach().double().numpy().copy()
    b2 = (l2.bias.detach().double().numpy() if l2.bias is not None else np.zeros(w2.shape[0])).copy()
    if isinstance(act, PolyActivation):
        poly = (act.a, act.b, act.c)
    elif isinstance(act, (nn.ReLU, nn.Sigmoid, nn.Tanh)):
        name = type(act).__name__
        if relu_range is None:
            if x_fit is None:
                raise ConfigError(f"replacing {name} by a polynomial needs the data its inputs come from (x_fit)")
            pre = x_fit.reshape(x_fit.shape[0], -1).double().numpy() @ w1.T + b1
            lo, hi = float(np.percentile(pre, 0.5)), float(np.percentile(pre, 99.5))
        else:
            lo, hi = relu_range
        grid = np.linspace(lo, hi, 2001)
        target = {
            "ReLU": np.maximum(grid, 0.0),
            "Sigmoid": 1.0 / (1.0 + np.exp(-grid)),
            "Tanh": np.tanh(grid),
        }[name]
        a, b, c = np.polyfit(grid, target, 2)
        poly = (float(a), float(b), float(c))
    else:
        raise ConfigError(
            f"the activation {type(act).__name__} has no polynomial form here; use ReLU, Sigmoid or Tanh "
            "(approximated by a fitted quadratic) or PolyActivation (exact)"
        )
    return PolyMLPWeights(w1, b1, poly, w2, b2)
