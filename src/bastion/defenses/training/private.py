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
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from bastion._progress import NullProgress, Progress
from bastion._validate import label_problems, raise_if, tensor_problems
from bastion.defenses.training import ghost
from bastion.defenses.training.checkpoint import Checkpoint, check_resumable, load_checkpoint, save_checkpoint
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
    grad_sample_mode: Literal["hooks", "functorch", "ghost"] = "ghost"  # fastest measured (bench/RESULTS.md)
    fix_modules: bool = False
    initial_weights: Literal["reset", "keep"] = "reset"
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
        if self.grad_sample_mode not in ("hooks", "functorch", "ghost"):
            problems.append(f"grad_sample_mode must be hooks, functorch or ghost, got {self.grad_sample_mode!r}")
        if self.initial_weights not in ("reset", "keep"):
            problems.append(f"initial_weights must be reset or keep, got {self.initial_weights!r}")
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
    resumed_from: int | None = None  # epochs already done when the run was resumed

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
                # Opacus's secure_mode needs torchcsprng, which is not available here: the noise is drawn from
                # torch's generator, statistically sound but not cryptographically secure
                "noise_rng": "torch.Generator (not cryptographically secure)",
            },
            "replaced_modules": list(self.replaced_modules),
            "initial_weights": (
                f"redrawn (seed {self.settings.seed}) before training"
                if self.settings.initial_weights == "reset"
                else "kept from the input model: the guarantee holds only if they never saw private data"
            ),
            "resumed_from": self.resumed_from,
            "history": list(self.history),
            "seconds": round(self.seconds, 3),
            "threads": torch.get_num_threads(),
        }


def check_private(
    classifier: object,
    x: Tensor,
    y: Tensor,
    settings: PrivateTraining,
    *,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
) -> list[str]:
    """Every problem :func:`private_train` would refuse, before any work; returns the layers ``fix_modules``
    would replace."""
    check_resumable(checkpoint_dir, resume)
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
    # the layers that own the trainable weights must be real layers: TorchScript owns them in ScriptModules, and
    # torch.export in bare nn.Module containers or the graph itself (an ONNX model converted by onnx2torch is a
    # GraphModule too, but its weights sit in real nn.Conv2d / nn.Linear layers, which Opacus handles)
    compiled = [
        type(m).__name__
        for m in module.modules()
        if (isinstance(m, (torch.jit.ScriptModule, torch.fx.GraphModule)) or type(m) is torch.nn.Module)
        and any(p.requires_grad for p in m.parameters(recurse=False))
    ]
    if compiled:
        raise ConfigError(
            f"DP-SGD computes per-sample gradients layer by layer, and this model is a compiled graph ({compiled[0]}: "
            "TorchScript or torch.export) without its layers; give it as ONNX (its layers are rebuilt) or as "
            "safetensors weights with --arch"
        )
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
    padded = [
        f"{name} ({type(m).__name__}, padding_mode={m.padding_mode})"
        for name, m in module.named_modules()
        if isinstance(m, torch.nn.modules.conv._ConvNd)
        and m.padding_mode != "zeros"
        and (settings.grad_sample_mode == "hooks" or not isinstance(m, torch.nn.Conv2d))
        and settings.grad_sample_mode != "functorch"
    ]
    if padded:  # Opacus 1.6 unfolds with zeros whatever the mode: wrong per-example gradients, and in ghost mode
        # the real gradients would then be clipped by the wrong norms (Bastion's own Conv2d norms are right)
        raise ConfigError(
            f"Opacus computes wrong per-example gradients for convolutions that pad with anything but zeros: "
            f"{'; '.join(padded[:5])}; train with grad_sample_mode='functorch' (bastion harden --dp-mode functorch)"
            + (
                " or 'ghost' (the default), which handles them for Conv2d"
                if settings.grad_sample_mode == "hooks"
                else ""
            )
        )
    return [type(e).__name__ for e in errors]


def _reinitialise(module: torch.nn.Module, seed: int) -> None:
    """Draw fresh weights for every trainable layer, so the private model starts independent of the data (weights
    trained non-privately on the same data would carry it past the DP guarantee); a layer that cannot be
    reinitialised is an error naming it."""
    torch.manual_seed(seed)
    stuck = []
    for name, m in module.named_modules():
        own = [p for p in m.parameters(recurse=False) if p.requires_grad]
        if not own:
            continue
        reset = getattr(m, "reset_parameters", None)
        if callable(reset):
            reset()
        else:
            stuck.append(f"{name or '(root)'} ({type(m).__name__})")
    if stuck:
        raise ConfigError(
            f"DP-SGD starts from fresh weights, and these layers have no reset_parameters(): {', '.join(stuck[:5])}; "
            "give them one, or keep the weights (--keep-weights) only if they were never trained on private data"
        )


def private_train(
    classifier: TorchClassifier,
    x: Tensor,
    y: Tensor,
    settings: PrivateTraining,
    *,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    progress: Progress | None = None,
) -> PrivateResult:
    """Train ``classifier``'s module with DP-SGD on ``(x, y)`` to ``settings.epsilon`` at ``settings.delta``.

    The module's weights are first redrawn (``settings.initial_weights == "reset"``): the guarantee covers the
    whole training only if the starting point does not depend on the data. With ``fix_modules`` Opacus's validator
    replaces unsupported layers (BatchNorm -> GroupNorm) first; the classifier's module is then the fixed one. A
    module made of a parameter-free feature stage and a head (``fixed_features``, ``head``; e.g. ScatterNet +
    linear) has its features computed once and only the head trained, which is the same model and the same privacy
    analysis. With ``checkpoint_dir`` every epoch is checkpointed (weights, optimizer, sampling and noise generators,
    the accountant's history) and ``resume=True`` continues an interrupted run exactly."""
    from opacus import PrivacyEngine
    from opacus.validators import ModuleValidator
    from torch.utils.data import DataLoader, TensorDataset

    from bastion.models.zoo.scatternet import fixed_prefix, precompute

    s = settings
    replaced = check_private(classifier, x, y, s, checkpoint_dir=checkpoint_dir, resume=resume)
    directory = Path(checkpoint_dir) if checkpoint_dir is not None else None
    progress = progress or NullProgress()
    # ghost mode trains conv nets in channels_last, as every other Bastion training loop does (Bastion's norms handle
    # the layout); hooks and functorch keep NCHW, the layout Opacus's per-sample gradient code was written for
    layout = torch.channels_last if s.grad_sample_mode == "ghost" and classifier._channels_last else None
    module = classifier.module.to(memory_format=layout or torch.contiguous_format)  # type: ignore[call-overload]
    if replaced:
        module = ModuleValidator.fix(module)
        classifier.module = module
    if s.initial_weights == "reset":
        _reinitialise(module, s.seed)
    split = fixed_prefix(module)
    inputs = classifier.prepare(x)
    if layout is not None:
        inputs = inputs.contiguous(memory_format=layout)
    trained_part = module
    if split is not None:
        features, trained_part = split
        progress.task("features", 1)
        inputs = precompute(features, inputs)
        progress.advance()
    torch.manual_seed(s.seed)
    loader = DataLoader(TensorDataset(inputs, y), batch_size=s.batch_size, shuffle=True)
    opt = torch.optim.SGD(trained_part.parameters(), lr=s.lr, momentum=s.momentum)
    noise = torch.Generator().manual_seed(s.seed + 1)
    history: list[dict[str, float]] = []
    start_epoch, resumed_from, accountant_history, sampling_state = 0, None, None, None
    meta_settings = asdict(s)
    if resume and directory is not None:
        ck, _ = load_checkpoint(directory, module=trained_part, optimizer=opt, generator=noise)
        if {k: v for k, v in ck.meta.get("settings", {}).items() if k != "epochs"} != {
            k: v for k, v in meta_settings.items() if k != "epochs"
        } or ck.meta.get("settings", {}).get("epochs") != s.epochs:
            raise ConfigError(
                f"the checkpoint in {directory} was made with other DP settings ({ck.meta.get('settings')}); resume "
                "with the same ones (the noise was calibrated to them)"
            )
        history = list(ck.meta["history"])
        accountant_history = [tuple(h) for h in ck.meta["accountant_history"]]
        start_epoch = resumed_from = ck.epoch
        sampling_state = ck.extra["sampling_rng"]
    trained_part.train()
    if s.grad_sample_mode == "ghost":
        ghost.install()  # convolutions' per-example norms without per-example gradients
    engine = PrivacyEngine(accountant=s.accountant)
    made = engine.make_private_with_epsilon(
        module=trained_part,
        optimizer=opt,
        data_loader=loader,
        target_epsilon=s.epsilon,
        target_delta=s.delta,
        epochs=s.epochs,
        max_grad_norm=s.max_grad_norm,
        grad_sample_mode=s.grad_sample_mode,
        noise_generator=noise,
        criterion=torch.nn.CrossEntropyLoss(),
    )
    if s.grad_sample_mode == "ghost":
        private, opt, criterion, loader = made
    else:
        private, opt, loader = made
        criterion = torch.nn.CrossEntropyLoss()
    if accountant_history is not None and sampling_state is not None:
        engine.accountant.history = accountant_history
        torch.set_rng_state(sampling_state)  # Opacus's Poisson sampler draws from the global generator
    # ghost mode: a norm pass that computes no weight gradients (ghost.py); the other modes' one pass needs them all
    norm_pass = ghost.NormPass(trained_part) if s.grad_sample_mode == "ghost" else None
    steps_per_epoch = len(loader)
    steps = start_epoch * steps_per_epoch
    progress.task("DP-SGD training", (s.epochs - start_epoch) * steps_per_epoch)
    t0 = time.perf_counter()
    private.train()
    try:
        with warnings.catch_warnings():  # Opacus's hooks on the first layer, whose input needs no gradient
            warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)
            for epoch in range(start_epoch, s.epochs):
                losses = []
                for xb, yb in loader:
                    if xb.shape[0] == 0:  # Poisson sampling can draw an empty batch; it still counts as a step
                        opt.zero_grad(set_to_none=True)
                        opt.step()
                    else:
                        opt.zero_grad(set_to_none=True)
                        loss = criterion(private(xb), yb)  # ghost mode: a layer used twice is refused
                        if norm_pass is None:
                            loss.backward()
                        else:
                            norm_pass.backward(loss)
                        opt.step()
                        losses.append(float(loss.item()))
                    steps += 1
                    progress.advance()
                history.append(
                    {
                        "epoch": epoch + 1,
                        "loss": sum(losses) / max(1, len(losses)),
                        "epsilon": engine.get_epsilon(s.delta),
                    }
                )
                if directory is not None:
                    inner = private._module
                    meta = {
                        "settings": meta_settings,
                        "history": history,
                        "accountant_history": [list(h) for h in engine.accountant.history],
                    }
                    save_checkpoint(
                        directory,
                        module=inner,
                        optimizer=opt.original_optimizer,
                        generator=noise,
                        best={},
                        checkpoint=Checkpoint(epoch + 1, meta, {"sampling_rng": torch.get_rng_state()}),
                    )
    finally:  # neither Opacus's hooks nor the norm pass's may outlive training, interrupted or not
        if norm_pass is not None:
            norm_pass.remove()
        private.eval()
        if hasattr(private, "remove_hooks"):
            private.remove_hooks()
    trained = private._module  # the wrapped module, trained in place
    for p in trained.parameters():
        for attr in ("grad_sample", "_forward_counter", "summed_grad"):
            if hasattr(p, attr):
                delattr(p, attr)
    if split is None:
        module = trained
    module.eval()
    if classifier._channels_last:
        module = module.to(memory_format=torch.channels_last)
    classifier.module = module
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
        resumed_from,
    )
