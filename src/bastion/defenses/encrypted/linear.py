"""Encrypted inference of a linear model (logistic regression, a linear layer): the plaintext weights, two packings.

The client encrypts, the server computes ``W x + b`` on ciphertexts it cannot read, the client decrypts the logits.
Which packing is cheaper depends on how many inputs come at once, so there are two, and the client picks:

- **batch** (feature-wise packing): ciphertext ``j`` holds feature ``j`` of up to N/2 inputs, so the server's work is
  ``k x d`` plaintext-scalar multiply-adds per *batch*, whatever its size: about 0.6 ms an input at 4,096 inputs.
  One layer and nothing after it, so the products are left at scale^2 in one 60-bit prime (no rescaling prime:
  half the work per operation) and need no rotation keys. The bias is added exactly without a plaintext at scale^2:
  ``(x_j + b/W_j) W_j`` for the row's largest weight ``W_j``.
- **single** (row-replicated packing, rotations): one input's ``d`` features padded to a power of two ``P`` and
  repeated for ``R = slots / P`` output rows in one ciphertext, in TenSEAL's column-major matrix layout; the server
  multiplies by the matching layout of ``R`` weight rows and sums each row with ``log2(P)`` rotations
  (``enc_matmul_plain``): ``ceil(k / R)`` ciphertexts, 10 rotations each for 784 features, instead of one full
  rotate-and-sum per output. About 70 ms for 784 -> 10, where one dot product per output takes 135-270 ms and
  TenSEAL's vector-matrix ``mm`` 1.2-4.3 s (measured here).

Both are CKKS over TenSEAL with parameters from :func:`~bastion.defenses.encrypted.params.choose_parameters`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from bastion.errors import ConfigError

Regime = Literal["batch", "single"]


@dataclass(frozen=True)
class LinearWeights:
    """``logits = x @ weight.T + bias`` for flattened inputs; float64 (what CKKS encodes)."""

    weight: np.ndarray  # (k, d)
    bias: np.ndarray  # (k,)

    def __post_init__(self) -> None:
        w, b = self.weight, self.bias
        if w.ndim != 2 or b.ndim != 1 or b.shape[0] != w.shape[0]:
            raise ConfigError(f"a linear model needs weight (k, d) and bias (k,), got {w.shape} and {b.shape}")
        if not (np.isfinite(w).all() and np.isfinite(b).all()):
            raise ConfigError("the linear model's weights hold NaN or infinity")

    @property
    def n_features(self) -> int:
        return int(self.weight.shape[1])

    @property
    def n_outputs(self) -> int:
        return int(self.weight.shape[0])

    def plaintext(self, x: torch.Tensor) -> torch.Tensor:
        """The same computation without encryption (float64), for comparison."""
        flat = x.reshape(x.shape[0], -1).double().numpy()
        return torch.from_numpy(flat @ self.weight.T + self.bias)

    def integer_bits(self, bounds: tuple[float, float]) -> int:
        """Bits above the scale the largest |logit| over inputs within ``bounds`` can need (a sound upper bound)."""
        lo, hi = bounds
        worst = np.abs(self.weight).sum(1) * max(abs(lo), abs(hi)) + np.abs(self.bias)
        return max(4, int(np.ceil(np.log2(float(worst.max()) + 1.0))) + 1)


def linear_weights(model: Any, input_shape: tuple[int, ...]) -> LinearWeights:
    """Read ``W, b`` from a model that is affine in its input: scikit-learn's linear models by their coefficients,
    any other classifier by probing it (its logits at 0 and at each basis vector) and then checking the result on
    random inputs. A model that is not affine (hidden layers with ReLU, softmax outputs) is refused with the reason."""
    est = getattr(model, "estimator", model)
    coef, intercept = getattr(est, "coef_", None), getattr(est, "intercept_", None)
    if coef is not None and intercept is not None:
        w, b = np.asarray(coef, np.float64), np.asarray(intercept, np.float64).reshape(-1)
        if w.shape[0] == 1:  # binary: scikit-learn keeps one row z; logits (-z/2, z/2) give its labels and softmax
            w, b = np.concatenate([-w / 2, w / 2]), np.concatenate([-b / 2, b / 2])
        return LinearWeights(w, b)
    d = int(np.prod(input_shape))
    probe = torch.cat([torch.zeros(1, d), torch.eye(d)]).reshape(d + 1, *input_shape)
    with torch.no_grad():
        out = torch.as_tensor(model.predict_logits(probe)).double()
    bias_t = out[0]
    weights = LinearWeights((out[1:] - bias_t).T.numpy().copy(), bias_t.numpy().copy())
    g = torch.Generator().manual_seed(0)
    x = torch.rand((64, *input_shape), generator=g)
    with torch.no_grad():
        real = torch.as_tensor(model.predict_logits(x)).double()
    err = float((weights.plaintext(x) - real).abs().max())
    scale = float(real.abs().max()) + 1e-9
    if err > 1e-4 * max(1.0, scale):
        raise ConfigError(
            f"the model is not linear in its input (its logits differ from the best affine map by up to {err:.3g}); "
            "encrypted inference converts logistic regression and single linear layers (and, later, small MLPs with "
            "polynomial activations)"
        )
    return weights


def batch_bias_terms(weights: LinearWeights) -> list[tuple[int, float, float]]:
    """For each output row: the feature ``j`` whose ciphertext carries the bias, ``b/W_j`` and ``W_j``
    (``(x_j + b/W_j) W_j = W_j x_j + b``). An all-zero row gets ``j = -1``."""
    out = []
    for k in range(weights.n_outputs):
        row = weights.weight[k]
        j = int(np.argmax(np.abs(row)))
        if row[j] == 0.0:
            out.append((-1, float(weights.bias[k]), 0.0))
        else:
            out.append((j, float(weights.bias[k] / row[j]), float(row[j])))
    return out


def single_layout(weights: LinearWeights, rows: int, padded: int) -> list[tuple[list[int], list[float], list[float]]]:
    """The single-input packing: output rows in groups of ``rows``; for each, the group's weights in TenSEAL's
    column-major matrix layout (``padded`` columns) and its biases."""
    groups = []
    k, d = weights.weight.shape
    for start in range(0, k, rows):
        idx = list(range(start, min(start + rows, k)))
        block = np.zeros((len(idx), padded))
        block[:, :d] = weights.weight[idx]
        groups.append((idx, block.T.reshape(-1).tolist(), weights.bias[idx].tolist()))
    return groups


def next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())
