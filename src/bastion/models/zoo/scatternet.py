"""ScatterNet features for differentially private learning (Tramèr & Boneh, ICLR 2021).

A scattering transform (Mallat; Bruna & Mallat 2013) is a fixed cascade of Morlet wavelet convolutions, moduli and
a low-pass filter: it has no trainable parameter, so it costs no privacy, and a linear model over its (normalised)
coefficients trained with DP-SGD beats end-to-end private CNNs at small epsilon. Tramèr & Boneh use kymatio's
``Scattering2D`` with J = 2 and L = 8 (81 channels per input channel at a quarter of the resolution) and a group
normalisation of the coefficients before the linear layer; so does :class:`ScatterNetLinear`.

kymatio 0.3.0, its last release, imports ``scipy.special.sph_harm`` at module level (for its 3D frontend only), and
current SciPy no longer has it. :func:`scattering2d` installs, only where SciPy lacks it, a wrapper with the old
signature over ``scipy.special.sph_harm_y`` before importing kymatio; SciPy itself is never pinned back.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from bastion._torch import batch_slices
from bastion.errors import ConfigError


def _legacy_sph_harm(m: Any, n: Any, theta: Any, phi: Any) -> Any:
    """SciPy < 1.15's ``sph_harm(m, n, theta, phi)``: order m, degree n, azimuth theta, polar angle phi; the new
    ``sph_harm_y(n, m, theta, phi)`` takes the degree first and the polar angle first."""
    import scipy.special

    return scipy.special.sph_harm_y(n, m, phi, theta)


def scattering2d(image_size: int, J: int, L: int) -> nn.Module:
    """kymatio's torch ``Scattering2D`` for square images of side ``image_size`` (kymatio imported with the SciPy
    compatibility shim described in the module docstring)."""
    import scipy.special

    if not hasattr(scipy.special, "sph_harm"):
        scipy.special.sph_harm = _legacy_sph_harm
    from kymatio.torch import Scattering2D

    return Scattering2D(J=J, shape=(image_size, image_size), L=L)


class ScatterFeatures(nn.Module):
    """The fixed scattering transform, its coefficients stacked as channels: ``(N, C, H, W)`` ->
    ``(N, C * K, H / 2^J, W / 2^J)`` with K = 1 + J L + L^2 J (J - 1) / 2 (81 for J = 2, L = 8)."""

    def __init__(self, in_channels: int, image_size: int, *, J: int = 2, L: int = 8) -> None:
        super().__init__()
        if image_size % (2**J):
            raise ConfigError(f"a ScatterNet with J={J} needs an image side divisible by {2**J}, got {image_size}")
        self.scattering = scattering2d(image_size, J, L)
        self.coefficients = 1 + J * L + L * L * J * (J - 1) // 2
        self.out_channels = in_channels * self.coefficients
        self.out_size = image_size // 2**J

    def forward(self, x: Tensor) -> Tensor:
        s = self.scattering(x.contiguous())
        return s.reshape(s.shape[0], self.out_channels, self.out_size, self.out_size)


class ScatterNetLinear(nn.Module):
    """ScatterNet features, group-normalised without learned affine terms, then one linear layer.

    ``fixed_features`` has no parameters; ``head`` is all that trains (``private_train`` computes the features once
    and trains only the head, which is the same model and the same privacy analysis at a fraction of the cost)."""

    def __init__(
        self, in_channels: int, image_size: int, num_classes: int, *, J: int = 2, L: int = 8, groups: int = 27
    ) -> None:
        super().__init__()
        self.fixed_features = ScatterFeatures(in_channels, image_size, J=J, L=L)
        channels = self.fixed_features.out_channels
        if channels % groups:
            raise ConfigError(f"groups={groups} must divide the {channels} scattering channels; choose a divisor")
        size = self.fixed_features.out_size
        self.head = nn.Sequential(
            nn.GroupNorm(groups, channels, affine=False),
            nn.Flatten(),
            nn.Linear(channels * size * size, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.fixed_features(x))


def fixed_prefix(module: nn.Module) -> tuple[nn.Module, nn.Module] | None:
    """``(fixed_features, head)`` when ``module`` is a parameter-free feature stage followed by a trainable head
    (``forward(x) == head(fixed_features(x))``, as :class:`ScatterNetLinear`); ``None`` otherwise."""
    features, head = getattr(module, "fixed_features", None), getattr(module, "head", None)
    if not isinstance(features, nn.Module) or not isinstance(head, nn.Module):
        return None
    if any(True for _ in features.parameters()):
        return None
    return features, head


@torch.no_grad()
def precompute(features: nn.Module, x: Tensor, batch_size: int = 1024) -> Tensor:
    """``features(x)`` in batches, without gradients."""
    features.eval()
    return torch.cat([features(x[s]) for s in batch_slices(x.shape[0], batch_size)])
