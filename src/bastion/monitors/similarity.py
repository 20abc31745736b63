"""A similarity encoder that ignores query blinding, for stateful detection of query-based attacks.

An attacker who knows a stateful detector is there adds fresh noise, small shifts and brightness/contrast jitter to
every query ("query blinding"): in input space each query is then as far from its predecessors as unrelated natural
inputs are, and a k-NN detector in input space falls silent (measured in docs/design-notes.md: Gaussian noise of
sigma 0.1 on Fashion-MNIST puts blinded near-duplicates 1.2x beyond the calibrated threshold, noise + 2 px shifts +
jitter 2.3x). Chen, Carlini & Wagner's answer is to measure similarity in the space of an encoder trained so that
transformed copies of an input map close together while different inputs stay apart; this module trains one
contrastively (NT-Xent, the SimCLR loss) on the served model's own clean data with the blinding transformations as
augmentations, a little wider than the ones the detector is promised to survive.

Paper: Chen, Carlini & Wagner, "Stateful detection of black-box adversarial attacks", ACM SPAI 2020 (§4: the
similarity encoder); loss from Chen, Kornblith, Norouzi & Hinton, "A simple framework for contrastive learning of
visual representations", ICML 2020.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from bastion._cache import digest_path, load_or_train
from bastion.errors import InputValidationError

log = logging.getLogger(__name__)
FORMAT = 2  # bump when the network or the training changes: cached encoders of another format are retrained


@dataclass(frozen=True)
class Blinding:
    """The transformations the encoder learns to ignore, each drawn afresh per input (fractions of the value range).

    ``noise``: Gaussian sigma up to this; ``shift``: whole-pixel translations up to this many pixels (images only);
    ``brightness``: an offset up to this; ``contrast``: a gain within 1 +- this; ``sign``: with probability 1/2, a
    +-``sign`` perturbation of random sign on every value (the texture of Square/SimBA-style perturbations).
    """

    noise: float = 0.15
    shift: int = 3
    brightness: float = 0.15
    contrast: float = 0.3
    sign: float = 0.1

    def apply(
        self, x: Tensor, bounds: tuple[float, float], generator: torch.Generator, unit: Tensor | float | None = None
    ) -> Tensor:
        """Blinded copies of ``x`` (N, *shape), within ``bounds``. Offsets and noise are in ``unit``: the value
        range for images (the default), each feature's standard deviation for tabular rows, whose features may
        differ in scale by orders of magnitude."""
        lo, hi = bounds
        span = hi - lo if unit is None else unit
        n = x.shape[0]
        view = (n,) + (1,) * (x.dim() - 1)
        gain = 1 + (torch.rand(view, generator=generator) * 2 - 1) * self.contrast
        offset = (torch.rand(view, generator=generator) * 2 - 1) * self.brightness * span
        x = (x - lo) * gain + lo + offset
        if self.shift and x.dim() == 4:
            x = _shift(x, self.shift, generator, fill=lo)
        sigma = torch.rand(view, generator=generator) * self.noise * span
        x = x + sigma * torch.randn(x.shape, generator=generator)
        flip = (torch.rand(view, generator=generator) < 0.5).to(x.dtype)
        x = x + flip * self.sign * span * torch.randint(0, 2, x.shape, generator=generator).mul(2).sub(1).to(x.dtype)
        return x.clamp(lo, hi)


def _shift(x: Tensor, s: int, generator: torch.Generator, fill: float) -> Tensor:
    """Each image translated by its own random (dy, dx) in [-s, s], uncovered pixels set to ``fill``."""
    n, _, h, w = x.shape
    padded = F.pad(x, (s, s, s, s), value=fill)
    dy = torch.randint(0, 2 * s + 1, (n, 1, 1), generator=generator)
    dx = torch.randint(0, 2 * s + 1, (n, 1, 1), generator=generator)
    rows = dy + torch.arange(h).view(1, h, 1)
    cols = dx + torch.arange(w).view(1, 1, w)
    return padded[torch.arange(n).view(n, 1, 1), :, rows, cols].permute(0, 3, 1, 2)


class _Standardize(nn.Module):
    """Flattens rows and puts every feature on the scale of its clean data (mean 0, standard deviation 1)."""

    mean: Tensor
    std: Tensor

    def __init__(self, d: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(d))
        self.register_buffer("std", torch.ones(d))

    def forward(self, x: Tensor) -> Tensor:
        return (x.flatten(1) - self.mean) / self.std


def is_image(input_shape: tuple[int, ...]) -> bool:
    """Whether inputs of this shape get the conv encoder (and shifts): (C, H, W) of at least 8x8."""
    return len(input_shape) == 3 and min(input_shape[1:]) >= 8


def _network(input_shape: tuple[int, ...], dim: int) -> nn.Sequential:
    """A small conv net for images, an MLP over standardised features for anything else."""
    if is_image(input_shape):
        c = input_shape[0]
        return nn.Sequential(
            nn.Conv2d(c, 32, 3, 2, 1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, 2, 1),
            nn.ReLU(),
            nn.Conv2d(64, 64, 3, 2, 1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
            nn.Linear(256, dim),
        )
    d = math.prod(input_shape)
    return nn.Sequential(
        _Standardize(d), nn.Linear(d, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, dim)
    )


class _Embedding(nn.Module):
    """The embedding as one graph: the network's output scaled to unit length."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.net(x), dim=1)


@dataclass(frozen=True)
class EncoderSettings:
    """How an encoder is trained; part of its cache key."""

    steps: int = 1500
    batch: int = 256
    dim: int = 64
    temperature: float = 0.1
    lr: float = 2e-3
    seed: int = 0
    blinding: Blinding = Blinding()


class SimilarityEncoder:
    """Maps inputs to unit vectors in which blinded copies of one input are close and different inputs far apart."""

    def __init__(self, net: nn.Module, input_shape: tuple[int, ...], bounds: tuple[float, float]) -> None:
        self.net = net.eval()
        self.input_shape = tuple(input_shape)
        self.bounds = bounds
        self._image = is_image(self.input_shape)
        self._compiled: Any = None  # an OrtModule of _Embedding after compile_inference

    def compile_inference(self, *, threads: int | None = None) -> bool:
        """Embed through onnxruntime from now on (``bastion.models.runtime``; about 2.4x faster per query on the
        CPU, outputs checked equal on export). False (PyTorch kept) when the network does not export."""
        from bastion.models.runtime import compile_module, example_inputs

        example = example_inputs(self.input_shape, self.bounds)
        self._compiled = compile_module(
            _Embedding(self.net).eval(), example, threads=threads, what="similarity encoder"
        )
        return self._compiled is not None

    def module(self) -> nn.Module:
        """:meth:`embed` as a traceable module over inputs (N, *input_shape), for a compiled graph to include."""
        return _Embedding(self.net).eval()

    @torch.no_grad()
    def embed(self, x: Tensor) -> Tensor:
        """(N, dim) unit vectors for inputs ``x``, flat (N, D) or shaped (N, *input_shape)."""
        x = x.float().reshape((x.shape[0], *self.input_shape))
        if self._compiled is not None:
            return self._compiled(x)[0]
        if self._image:
            x = x.contiguous(memory_format=torch.channels_last)
        return F.normalize(self.net(x), dim=1)

    __call__ = embed

    @classmethod
    def train(
        cls,
        clean: Tensor,
        bounds: tuple[float, float],
        settings: EncoderSettings = EncoderSettings(),
    ) -> SimilarityEncoder:
        """Train on clean inputs (N, *shape) of the model's input space: two blinded views of each input in a batch
        are positives, every other view a negative."""
        if clean.shape[0] < 16:
            raise InputValidationError(f"the similarity encoder needs at least 16 clean inputs, got {clean.shape[0]}")
        g = torch.Generator().manual_seed(settings.seed)
        torch.manual_seed(settings.seed)
        shape = tuple(clean.shape[1:])
        net = _network(shape, settings.dim)
        image = is_image(shape)
        x_all = clean.float()
        unit: Tensor | None = None
        if image:
            net = net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        else:
            flat = x_all.flatten(1)
            std = flat.std(0).clamp_min(1e-6 * max(1.0, float(flat.abs().max())))
            scaler = net[0]
            assert isinstance(scaler, _Standardize)
            scaler.mean.copy_(flat.mean(0))
            scaler.std.copy_(std)
            unit = std.reshape(shape)
        opt = torch.optim.Adam(net.parameters(), settings.lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, settings.steps)
        b = min(settings.batch, clean.shape[0])
        target = torch.cat([torch.arange(b, 2 * b), torch.arange(b)])
        start = time.perf_counter()
        net.train()
        for _ in range(settings.steps):
            xb = x_all[torch.randint(0, x_all.shape[0], (b,), generator=g)]
            blind = settings.blinding
            views = torch.cat([blind.apply(xb, bounds, g, unit), blind.apply(xb, bounds, g, unit)])
            if image:
                views = views.contiguous(memory_format=torch.channels_last)
            z = F.normalize(net(views), dim=1)
            sim = (z @ z.T) / settings.temperature
            sim.fill_diagonal_(float("-inf"))
            loss = F.cross_entropy(sim, target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        log.info("similarity encoder trained: %d steps in %.1f s", settings.steps, time.perf_counter() - start)
        return cls(net, shape, bounds)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"format": str(FORMAT), "input_shape": json.dumps(self.input_shape), "bounds": json.dumps(self.bounds)}
        tmp = path.with_suffix(".tmp")
        save_file({k: v.contiguous() for k, v in self.net.state_dict().items()}, str(tmp), metadata=meta)
        os.replace(tmp, path)  # never a half-written file under the final name

    @classmethod
    def load(cls, path: Path, dim: int) -> SimilarityEncoder:
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        if meta.get("format") != str(FORMAT):
            raise InputValidationError(f"{path} is a similarity encoder of another format; delete it to retrain")
        shape = tuple(json.loads(meta["input_shape"]))
        lo, hi = json.loads(meta["bounds"])
        net = _network(shape, dim)
        net.load_state_dict(load_file(str(path)))
        if is_image(shape):
            net = net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        return cls(net, shape, (float(lo), float(hi)))


def encoder_for(
    clean: Tensor, bounds: tuple[float, float], settings: EncoderSettings = EncoderSettings()
) -> SimilarityEncoder:
    """The encoder for this clean data and these settings: loaded from the cache when one was trained before (the
    key is a digest of the data, the bounds, the settings and the format), else trained and cached."""
    path = digest_path("similarity-encoders", "", clean, [list(bounds), asdict(settings), FORMAT])

    def train() -> SimilarityEncoder:
        log.warning(
            "training the probing monitor's similarity encoder on %d clean inputs (%d steps; once per model and "
            "data, then cached in %s)",
            clean.shape[0],
            settings.steps,
            path.parent,
        )
        return SimilarityEncoder.train(clean, bounds, settings)

    return load_or_train(path, "similarity encoder", lambda p: SimilarityEncoder.load(p, settings.dim), train)
