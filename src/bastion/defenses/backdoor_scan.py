"""Does a trained model carry a backdoor? Neural Cleanse, without the training data.

Paper: Wang, Yao, Shan, Li, Viswanath, Zheng & Zhao, "Neural Cleanse: Identifying and Mitigating Backdoor Attacks
in Neural Networks", IEEE S&P 2019. For every class ``t`` the scan looks for the smallest trigger that sends clean
inputs to ``t``: a mask ``m`` (one value per pixel in [0, 1]) and a pattern ``p`` such that
``(1 - m) * x + m * p`` is classified ``t`` for at least ``success`` of the inputs, minimising the mask's L1 norm.
A class reachable by a much smaller trigger than every other is the backdoor's target: the anomaly index of each
class is how far its mask norm lies below the median, in robust standard deviations (1.4826 x the median absolute
deviation), and a class with an index above ``threshold`` (2, as in the paper) is flagged.

All classes are reverse-engineered at once: one batched forward pass carries every class's triggered copy of the
clean batch, and the paper's per-class weight of the norm term (raised while a class's trigger works, lowered
while it does not) is a vector, so the cost is one optimisation, not one per class.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from bastion._progress import NullProgress, Progress
from bastion.errors import ConfigError


@dataclass(frozen=True)
class ScanSettings:
    """``steps`` of Adam (``lr``) over minibatches of ``batch`` clean inputs; the norm weight starts at ``cost``
    and is multiplied or divided by ``cost_step`` every ``patience`` steps; a trigger counts once it reaches
    ``success``; ``threshold`` is the anomaly index that flags a class."""

    steps: int = 400
    batch: int = 64
    lr: float = 0.1
    cost: float = 1e-3
    cost_step: float = 1.5
    patience: int = 10
    success: float = 0.99
    threshold: float = 2.0

    def problems(self) -> list[str]:
        out = []
        for name in ("steps", "batch", "patience"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                out.append(f"{name} must be an int >= 1, got {v!r}")
        for name in ("lr", "cost", "threshold"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                out.append(f"{name} must be a number > 0, got {v!r}")
        if not isinstance(self.cost_step, (int, float)) or not self.cost_step > 1:
            out.append(f"cost_step must be > 1, got {self.cost_step!r}")
        if not isinstance(self.success, (int, float)) or not 0 < self.success <= 1:
            out.append(f"success must be in (0, 1], got {self.success!r}")
        return out


@dataclass(frozen=True)
class BackdoorScan:
    """Per class: the L1 norm of the smallest working trigger found (inf when none reached ``success``), the share
    of inputs it sends to the class, and its anomaly index; ``flagged`` classes are the suspected targets, most
    anomalous first."""

    norms: tuple[float, ...]
    success: tuple[float, ...]
    anomaly: tuple[float, ...]
    flagged: tuple[int, ...]
    masks: Tensor = field(repr=False)  # (K, 1, H, W)
    patterns: Tensor = field(repr=False)  # (K, C, H, W)
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def backdoored(self) -> bool:
        return bool(self.flagged)

    def to_dict(self) -> dict[str, Any]:
        return {
            "backdoored": self.backdoored,
            "flagged_classes": list(self.flagged),
            "mask_l1": [None if math.isinf(n) else n for n in self.norms],
            "trigger_success": list(self.success),
            "anomaly_index": list(self.anomaly),
            "settings": dict(self.settings),
            "seconds": self.seconds,
        }


def anomaly_index(norms: Tensor) -> Tensor:
    """How far below the median each norm lies, in robust standard deviations (negative: above the median)."""
    finite = norms[torch.isfinite(norms)]
    if finite.numel() < 2:
        return torch.zeros_like(norms)
    med = finite.median()
    mad = 1.4826 * (finite - med).abs().median()
    if float(mad) <= 0:
        mad = finite.std().clamp_min(1e-12)
    out = (med - norms) / mad
    return torch.where(torch.isfinite(norms), out, torch.full_like(norms, -math.inf))


def neural_cleanse(
    model: Any,
    x: Tensor,
    *,
    settings: ScanSettings | None = None,
    generator: torch.Generator | None = None,
    progress: Progress | None = None,
) -> BackdoorScan:
    """Reverse-engineer the smallest trigger for every class of ``model`` (a differentiable classifier over image
    inputs (C, H, W)) from clean inputs ``x`` and flag the classes with an anomalously small one."""
    settings = settings or ScanSettings()
    problems = settings.problems()
    if problems:
        raise ConfigError("invalid backdoor-scan settings", problems=problems)
    if not hasattr(model, "logits"):
        raise ConfigError(
            "the backdoor scan optimises a trigger through the model's gradients: give a differentiable model "
            "(a torch model, or ONNX converted to torch), not a black-box one"
        )
    spec = model.spec
    if len(tuple(spec.input_shape)) != 3:
        raise ConfigError(f"the backdoor scan needs image inputs (C, H, W); this model takes {tuple(spec.input_shape)}")
    if x.dim() != 4 or tuple(x.shape[1:]) != tuple(spec.input_shape) or x.shape[0] < 2:
        raise ConfigError(
            f"the scan needs at least 2 clean inputs of shape {tuple(spec.input_shape)}, got {tuple(x.shape)}"
        )
    progress = progress or NullProgress()
    start = time.perf_counter()
    g = generator or torch.Generator().manual_seed(0)
    k = int(spec.num_classes)
    c, h, w = (int(v) for v in spec.input_shape)
    lo, hi = float(spec.bounds[0]), float(spec.bounds[1])
    mask_param = torch.full((k, 1, h, w), -2.0).requires_grad_(True)  # tanh space: mask starts at about 0.02
    pattern_param = (torch.rand(k, c, h, w, generator=g) * 2 - 1).mul(0.5).requires_grad_(True)
    opt = torch.optim.Adam([mask_param, pattern_param], lr=settings.lr, betas=(0.5, 0.9))
    cost = torch.full((k,), float(settings.cost))
    targets = torch.arange(k)
    best_norm = torch.full((k,), math.inf)
    best_success = torch.zeros(k)
    best_mask = torch.zeros(k, 1, h, w)
    best_pattern = torch.zeros(k, c, h, w)
    up = torch.zeros(k, dtype=torch.long)
    down = torch.zeros(k, dtype=torch.long)
    n = x.shape[0]
    b = min(settings.batch, n)
    progress.task("reverse-engineering a trigger for every class", settings.steps)
    for _ in range(settings.steps):
        idx = torch.randint(0, n, (b,), generator=g)
        xb = x[idx]
        mask = (torch.tanh(mask_param) + 1) / 2  # (K, 1, H, W)
        pattern = lo + (hi - lo) * (torch.tanh(pattern_param) + 1) / 2  # (K, C, H, W)
        stamped = (1 - mask[:, None]) * xb[None] + mask[:, None] * pattern[:, None]  # (K, B, C, H, W)
        logits = model.logits(stamped.reshape(k * b, c, h, w))
        ce = F.cross_entropy(logits, targets.repeat_interleave(b), reduction="none").view(k, b).mean(1)
        l1 = mask.flatten(1).sum(1)
        loss = (ce + cost * l1).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            hit = (logits.argmax(1).view(k, b) == targets[:, None]).float().mean(1)
            better = (hit >= settings.success) & (l1 < best_norm)
            best_norm = torch.where(better, l1, best_norm)
            best_success = torch.where(better, hit, best_success)
            best_mask[better] = mask[better]
            best_pattern[better] = pattern[better]
            ok = hit >= settings.success
            up = torch.where(ok, up + 1, torch.zeros_like(up))
            down = torch.where(ok, torch.zeros_like(down), down + 1)
            raise_cost = up >= settings.patience
            lower_cost = down >= settings.patience
            cost = torch.where(raise_cost, cost * settings.cost_step, cost)
            cost = torch.where(lower_cost, cost / settings.cost_step, cost)
            up = torch.where(raise_cost, torch.zeros_like(up), up)
            down = torch.where(lower_cost, torch.zeros_like(down), down)
        progress.advance()
    # the reached success of classes whose trigger never worked, measured on the last masks
    with torch.no_grad():
        never = torch.isinf(best_norm)
        if bool(never.any()):
            best_success = torch.where(never, hit, best_success)
    index = anomaly_index(best_norm)
    over = torch.nonzero(index > settings.threshold).flatten()
    flagged = tuple(int(i) for i in over[torch.argsort(index[over], descending=True)].tolist())  # most anomalous first
    return BackdoorScan(
        norms=tuple(float(v) for v in best_norm.tolist()),
        success=tuple(float(v) for v in best_success.tolist()),
        anomaly=tuple(float(v) for v in index.tolist()),
        flagged=flagged,
        masks=best_mask,
        patterns=best_pattern,
        settings=settings.__dict__ | {"inputs": n},
        seconds=time.perf_counter() - start,
    )
