"""Feature squeezers (Xu, Evans & Qi 2018): coarsen an input so that small adversarial changes vanish.

Each squeezer maps a batch (N, *shape) within ``bounds`` to a batch of the same shape and bounds, vectorised.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from bastion._torch import as_images
from bastion.errors import ConfigError


class Squeezer(Protocol):
    @property
    def name(self) -> str: ...

    def __call__(self, x: Tensor, bounds: tuple[float, float]) -> Tensor: ...


@dataclass(frozen=True)
class BitDepth:
    """Rounds every value to one of 2**bits levels across the bounds."""

    bits: int = 4

    def __post_init__(self) -> None:
        if isinstance(self.bits, bool) or not isinstance(self.bits, int) or not 1 <= self.bits <= 16:
            raise ConfigError(f"bits must be an int in [1, 16], got {self.bits!r}")

    @property
    def name(self) -> str:
        return f"bit-depth-{self.bits}"

    def __call__(self, x: Tensor, bounds: tuple[float, float]) -> Tensor:
        lo, hi = bounds
        levels = 2**self.bits - 1
        return torch.round((x - lo) / (hi - lo) * levels) / levels * (hi - lo) + lo


@dataclass(frozen=True)
class MedianFilter:
    """Each pixel replaced by the median of the ``size`` x ``size`` window at it (per channel; edges reflected).
    Images only: a table has no neighbouring values."""

    size: int = 2

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or not 2 <= self.size <= 7:
            raise ConfigError(f"size must be an int in [2, 7], got {self.size!r}")

    @property
    def name(self) -> str:
        return f"median-{self.size}x{self.size}"

    def __call__(self, x: Tensor, bounds: tuple[float, float]) -> Tensor:
        del bounds  # a median stays within the values it is taken over
        img = as_images(x)
        k = self.size
        before, after = (k - 1) // 2, k // 2
        h, w = img.shape[2], img.shape[3]
        # reflection needs more pixels than the padding; while exporting (shapes are traced) the image is assumed
        # large enough, and an export that is not fails and stays on PyTorch
        tiny = not torch.jit.is_tracing() and min(h, w) <= after
        padded = F.pad(img, (before, after, before, after), mode="replicate" if tiny else "reflect")
        # the k*k shifted copies of the image, one per window position (slices export to ONNX; unfold does not)
        windows = torch.stack([padded[:, :, i : i + h, j : j + w] for i in range(k) for j in range(k)], -1)
        # the lower of the two middle values for an even window, as torch.median takes it
        return windows.sort(-1).values[..., (k * k - 1) // 2].reshape(x.shape)
