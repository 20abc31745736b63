"""Reference architectures: small, fast CNNs for 8x8 and 28x28 images and an MLP for tabular data.

Each architecture is registered by name with a builder taking the model's input shape and number of classes
plus its own keyword parameters; a model card records the name and the parameters so the exact network can be
rebuilt from the card alone.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from bastion._registry import Registry
from bastion.errors import ConfigError

Builder = Callable[..., nn.Module]
ARCHITECTURES: Registry[Builder] = Registry("architecture")


class SmallCNN(nn.Module):
    """Two 3x3 conv blocks (ReLU, 2x2 max-pool after each if the image is large enough) and a two-layer head."""

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        num_classes: int,
        *,
        widths: tuple[int, int] = (32, 64),
        hidden: int = 128,
        pool: bool = True,
    ) -> None:
        super().__init__()
        c1, c2 = widths
        layers: list[nn.Module] = [nn.Conv2d(in_channels, c1, 3, padding=1), nn.ReLU()]
        size = image_size
        if pool:
            layers.append(nn.MaxPool2d(2))
            size //= 2
        layers += [nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        size //= 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(c2 * size * size, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class MLP(nn.Module):
    """A multilayer perceptron over flat feature vectors."""

    def __init__(self, in_features: int, num_classes: int, *, hidden: tuple[int, ...] = (64, 32)) -> None:
        super().__init__()
        dims = [in_features, *hidden]
        layers: list[nn.Module] = []
        for a, b in itertools.pairwise(dims):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.append(nn.Linear(dims[-1], num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.flatten(1))


class TanhCNN(nn.Module):
    """The small tanh CNN used for DP-SGD on 28x28 images by Papernot et al. (2021, "Tempered sigmoid activations")
    and Tramèr & Boneh (2021): bounded activations keep clipped, noised gradients informative."""

    def __init__(self, in_channels: int, image_size: int, num_classes: int) -> None:
        super().__init__()
        size = (image_size + 6 - 8) // 2 + 1 - 1  # 8x8 stride-2 conv (padding 3), then 2x2 stride-1 max-pool
        size = (size - 4) // 2 + 1 - 1  # 4x4 stride-2 conv, then 2x2 stride-1 max-pool
        if size < 1:
            raise ConfigError(f"dp-cnn needs images of at least 16x16 pixels, got {image_size}x{image_size}")
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, 16, 8, stride=2, padding=3),
            nn.Tanh(),
            nn.MaxPool2d(2, 1),
            nn.Conv2d(16, 32, 4, stride=2),
            nn.Tanh(),
            nn.MaxPool2d(2, 1),
            nn.Flatten(),
            nn.Linear(32 * size * size, 32),
            nn.Tanh(),
            nn.Linear(32, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def _image_dims(input_shape: tuple[int, ...], arch: str) -> tuple[int, int]:
    if len(input_shape) != 3 or input_shape[1] != input_shape[2]:
        raise ConfigError(f"{arch} needs square images (C, H, H), got input shape {input_shape}")
    return input_shape[0], input_shape[1]


@ARCHITECTURES.register("digits-cnn")
def digits_cnn(input_shape: tuple[int, ...], num_classes: int, **params: Any) -> nn.Module:
    """Reference CNN for 8x8 images (scikit-learn digits): no first pooling, 16/32 channels, 64 hidden."""
    c, size = _image_dims(input_shape, "digits-cnn")
    kw: dict[str, Any] = {"widths": (16, 32), "hidden": 64, "pool": False} | params
    kw["widths"] = tuple(kw["widths"])
    return SmallCNN(c, size, num_classes, **kw)


@ARCHITECTURES.register("fmnist-cnn")
def fmnist_cnn(input_shape: tuple[int, ...], num_classes: int, **params: Any) -> nn.Module:
    """Reference CNN for 28x28 images (Fashion-MNIST): 32/64 channels, two poolings, 128 hidden."""
    c, size = _image_dims(input_shape, "fmnist-cnn")
    kw: dict[str, Any] = {"widths": (32, 64), "hidden": 128, "pool": True} | params
    kw["widths"] = tuple(kw["widths"])
    return SmallCNN(c, size, num_classes, **kw)


@ARCHITECTURES.register("dp-cnn")
def dp_cnn(input_shape: tuple[int, ...], num_classes: int, **params: Any) -> nn.Module:
    """Tanh CNN for DP-SGD on images of 16x16 pixels or more (Tramèr & Boneh's end-to-end baseline)."""
    c, size = _image_dims(input_shape, "dp-cnn")
    return TanhCNN(c, size, num_classes, **params)


@ARCHITECTURES.register("scatternet-linear")
def scatternet_linear(input_shape: tuple[int, ...], num_classes: int, **params: Any) -> nn.Module:
    """ScatterNet (kymatio Scattering2D, J=2, L=8) + group norm + linear, for DP-SGD (Tramèr & Boneh 2021)."""
    from bastion.models.zoo.scatternet import ScatterNetLinear

    c, size = _image_dims(input_shape, "scatternet-linear")
    return ScatterNetLinear(c, size, num_classes, **params)


@ARCHITECTURES.register("tabular-mlp")
def tabular_mlp(input_shape: tuple[int, ...], num_classes: int, **params: Any) -> nn.Module:
    """Reference MLP for tabular data (breast cancer)."""
    kw: dict[str, Any] = {"hidden": (64, 32)} | params
    kw["hidden"] = tuple(kw["hidden"])
    in_features = 1
    for s in input_shape:
        in_features *= s
    return MLP(in_features, num_classes, **kw)


DEFAULT_ARCHITECTURE = {"digits": "digits-cnn", "fashion-mnist": "fmnist-cnn", "breast-cancer": "tabular-mlp"}


def build(arch: str, input_shape: tuple[int, ...], num_classes: int, params: dict[str, Any] | None = None) -> nn.Module:
    """Build architecture ``arch`` for the given input shape and class count."""
    builder = ARCHITECTURES.get(arch)
    try:
        return builder(tuple(input_shape), num_classes, **(params or {}))
    except TypeError as e:
        raise ConfigError(f"bad parameters for architecture {arch!r}: {e}") from None
