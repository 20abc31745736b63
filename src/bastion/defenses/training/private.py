"""Differentially private training: DP-SGD (Abadi et al., CCS 2016) on Opacus, to a target (epsilon, delta).

Opacus does the per-sample gradients, the clipping, the noise and the accounting; this module adds what a user of
Bastion needs around it: the module validator first (an unsupported layer, e.g. BatchNorm, is an error that names
the layer and the fix, GroupNorm via ``fix_modules``), Poisson sampling with the noise multiplier that reaches the
target epsilon under the PRV accountant (``make_private_with_epsilon``), and a record of every privacy setting for
the model's card: epsilon actually spent, delta, accountant, noise multiplier, clipping norm, sample rate, steps.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from bastion._progress import NullProgress, Progress
from bastion._validate import label_problems, raise_if, tensor_problems
from bastion.errors import ConfigError, NoGradientError
from bastion.models.torch import TorchClassifier

Accountant = Literal["prv", "rdp"]


@dataclass(frozen=True)
class PrivateTraining:
    """Settings of one DP-SGD run. ``delta`` defaults to 1e-5 and must be below 1/n (n training inputs);
    ``batch_size`` is the expected (Poisson) batch; SGD with momentum at ``lr``."""

    epsilon: float = 3.0
    delta: float = 1e-5
    max_grad_norm: float = 1.0
    epochs: int = 10
    batch_size: int = 256
    lr: float = 0.5
    momentum: float = 0.9
    accountant: Accountant = "prv"
    grad_sample_mode: Literal["hooks", "functorch"] = "hooks"  # hooks measured fastest (bench/RESULTS.md)
    fix_modules: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        problems = []
        for name in ("epsilon", "max_grad_norm", "lr"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                problems.append(f"{name} must be a finite number > 0, got {v!r}")
        if not isinstance(self.delta, (int, float)) or not 0 < self.delta < 1:
            problems.append(f"delta must be in (0, 1), got {self.delta!r}")
        for name in ("epochs", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                problems.append(f"{name} must be an int >= 1, got {v!r}")
        if self.accountant not in ("prv", "rdp"):
            problems.append(f"accountant must be prv or rdp, got {self.accountant!r}")
        if self.grad_sample_mode not in ("hooks", "functorch"):
            problems.append(f"grad_sample_mode must be hooks or functorch, got {self.grad_sample_mode!r}")
        if problems:
            raise ConfigError("invalid DP-SGD settings", problems=problems)


@dataclass
class PrivateResult:
    """The privately trained classifier and its privacy record."""

    classifier: TorchClassifier
    settings: PrivateTraining
    epsilon: float  # spent, by the accountant, at settings.delta
    noise_multiplier: float
    sample_rate: float
    steps: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    replaced_modules: list[str] = field(default_factory=list)

    def training_record(self) -> dict[str, Any]:
        return {
            "method": "dp-sgd",
            "settings": asdict(self.settings),
            "privacy": {
                "epsilon": self.epsilon,
                "delta": self.settings.delta,
                "accountant": self.settings.accountant,
                "noise_multiplier": self.noise_multiplier,
                "max_grad_norm": self.settings.max_grad_norm,
                "sample_rate": self.sample_rate,
                "steps": self.steps,
            },
            "replaced_modules": list(self.replaced_modules),
            "history": list(self.history),
            "seconds": round(self.seconds, 3),
            "threads": torch.get_num_threads(),
        }


def check_private(classifier: object, x: Tensor, y: Tensor, settings: PrivateTraining) -> list[str]:
    """Every problem :func:`private_train` would refuse, before any work; returns the layers ``fix_modules``
    would replace."""
    from opacus.validators import ModuleValidator

    if not isinstance(classifier, TorchClassifier):
        raise NoGradientError(
            f"DP-SGD needs a differentiable torch model (a TorchClassifier), got {type(classifier).__name__}"
        )
    spec = classifier.spec
    raise_if(
        tensor_problems(x, name="x", input_shape=spec.input_shape, bounds=spec.bounds)
        + label_problems(y, name="y", n=int(x.shape[0]), num_classes=spec.num_classes),
        "training data",
    )
    n = int(x.shape[0])
    if settings.delta >= 1 / n:
        raise ConfigError(
            f"delta {settings.delta:g} is not below 1/n = {1 / n:.3g} for {n} training inputs: a delta that large "
            "allows leaking whole records; choose delta < 1/n (1e-5 is usual)"
        )
    if settings.batch_size > n:
        raise ConfigError(f"batch_size {settings.batch_size} exceeds the {n} training inputs; lower it")
    module = classifier.module
    was_training = module.training
    module.train()  # the validator judges the module as it will train
    try:
        errors = ModuleValidator.validate(module, strict=False)
    finally:
        module.train(was_training)
    if errors and not settings.fix_modules:
        names = "; ".join(str(e).splitlines()[0] for e in errors[:5])
        raise ConfigError(
            f"the model has layers DP-SGD cannot train with per-sample gradients: {names}; retrain with GroupNorm "
            "instead of BatchNorm, or pass --fix-modules to replace them (the replaced layers start untrained)"
        )
    return [type(e).__name__ for e in errors]


def private_train(
    classifier: TorchClassifier,
    x: Tensor,
    y: Tensor,
    settings: PrivateTraining,
    *,
    progress: Progress | None = None,
) -> PrivateResult:
    """Train ``classifier``'s module with DP-SGD on ``(x, y)`` to ``settings.epsilon`` at ``settings.delta``.

    With ``fix_modules`` Opacus's validator replaces unsupported layers (BatchNorm -> GroupNorm) first; the
    classifier's module is then the fixed one."""
    from opacus import PrivacyEngine
    from opacus.validators import ModuleValidator
    from torch.utils.data import DataLoader, TensorDataset

    s = settings
    replaced = check_private(classifier, x, y, s)
    progress = progress or NullProgress()
    module = classifier.module.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    if replaced:
        module = ModuleValidator.fix(module)
        classifier.module = module
    torch.manual_seed(s.seed)
    g = torch.Generator().manual_seed(s.seed)
    prepared = classifier.prepare(x)
    loader = DataLoader(TensorDataset(prepared, y), batch_size=s.batch_size, shuffle=True, generator=g)
    opt = torch.optim.SGD(module.parameters(), lr=s.lr, momentum=s.momentum)
    module.train()
    engine = PrivacyEngine(accountant=s.accountant)
    private, opt, loader = engine.make_private_with_epsilon(
        module=module,
        optimizer=opt,
        data_loader=loader,
        target_epsilon=s.epsilon,
        target_delta=s.delta,
        epochs=s.epochs,
        max_grad_norm=s.max_grad_norm,
        grad_sample_mode=s.grad_sample_mode,
        noise_generator=torch.Generator().manual_seed(s.seed + 1),
    )
    steps_per_epoch = len(loader)
    progress.task("DP-SGD training", s.epochs * steps_per_epoch)
    t0 = time.perf_counter()
    history = []
    steps = 0
    private.train()
    with warnings.catch_warnings():  # Opacus's hooks on the first layer, whose input needs no gradient
        warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)
        for epoch in range(s.epochs):
            losses = []
            for xb, yb in loader:
                if xb.shape[0] == 0:  # Poisson sampling can draw an empty batch; it still counts as a step
                    opt.zero_grad(set_to_none=True)
                    opt.step()
                else:
                    loss = F.cross_entropy(private(xb), yb)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    losses.append(float(loss.detach()))
                steps += 1
                progress.advance()
            history.append(
                {"epoch": epoch + 1, "loss": sum(losses) / max(1, len(losses)), "epsilon": engine.get_epsilon(s.delta)}
            )
    private.eval()
    if hasattr(private, "remove_hooks"):  # the per-sample-gradient hooks must not outlive training
        private.remove_hooks()
    trained = private._module  # the wrapped module, trained in place
    for p in trained.parameters():
        for attr in ("grad_sample", "_forward_counter", "summed_grad"):
            if hasattr(p, attr):
                delattr(p, attr)
    trained.eval()
    if classifier._channels_last:
        trained = trained.to(memory_format=torch.channels_last)
    classifier.module = trained
    return PrivateResult(
        classifier,
        s,
        float(engine.get_epsilon(s.delta)),
        float(opt.noise_multiplier),
        float(getattr(loader, "sample_rate", s.batch_size / x.shape[0])),
        steps,
        time.perf_counter() - t0,
        history,
        replaced,
    )
