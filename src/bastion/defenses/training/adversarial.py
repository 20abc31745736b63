"""Adversarial training: PGD-AT, TRADES, fast FGSM-AT and N-FGSM, built on Bastion's own attacks.

- **PGD-AT** (Madry et al., ICLR 2018): train on the PGD examples of each batch (random start, ``steps`` steps).
- **TRADES** (Zhang et al., ICML 2019): cross-entropy on the clean batch plus ``beta`` times the KL divergence
  between the model's outputs on the clean batch and on the point of the eps-ball that maximises that divergence
  (found by PGD on the KL, started at the input plus a little Gaussian noise, as the paper's code does).
- **fast-AT** (Wong, Rice & Kolter, ICLR 2020, "Fast is better than free"): one FGSM step of size 1.25 eps from a
  uniformly random start, with a cyclic learning rate. It can overfit catastrophically (robustness to PGD collapses
  within an epoch while FGSM accuracy rises), so every epoch ends with a PGD check on held-out data; a drop of
  ``overfit_drop`` from the best check stops training and the best epoch's weights are kept.
- **N-FGSM** (de Jorge et al., NeurIPS 2022, "Make some noise"): single-step like fast-AT, with a random start from
  the 2 eps ball, a step of eps and no projection back to the eps-ball; same cost, stronger training examples. Same
  cyclic schedule and overfitting watch as fast-AT.

Every method checks robust accuracy under PGD on the held-out inputs after each epoch and returns the best epoch's
weights (and says which epoch that was). With ``checkpoint_dir`` each epoch is checkpointed (safetensors + JSON,
``bastion.defenses.training.checkpoint``) and ``resume=True`` continues an interrupted run exactly: the same seed and
settings give the same weights whether or not the run was interrupted.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from bastion._progress import NullProgress, Progress
from bastion._torch import batch_slices, make_generator
from bastion._validate import label_problems, raise_if, tensor_problems
from bastion.attacks._projection import normalize_step, project, random_start
from bastion.attacks.evasion.pgd import PGD
from bastion.defenses.training.checkpoint import Checkpoint, check_resumable, load_checkpoint, save_checkpoint
from bastion.errors import ConfigError, NoGradientError
from bastion.models.torch import TorchClassifier
from bastion.types import Norm, ThreatModel

Method = Literal["pgd-at", "trades", "fast-at", "n-fgsm"]
METHODS: tuple[str, ...] = ("pgd-at", "trades", "fast-at", "n-fgsm")
SINGLE_STEP = ("fast-at", "n-fgsm")  # one gradient a batch: cyclic SGD schedule, catastrophic-overfitting watch


@dataclass(frozen=True)
class AdversarialTraining:
    """Settings of one adversarial-training run (all recorded in the hardened model's card).

    ``step_size``: the inner attack's step; default 2.5 * eps / steps (PGD-AT, TRADES), 1.25 * eps (fast-AT), eps
    (N-FGSM). ``lr`` and the schedule of N-FGSM are fast-AT's.
    ``lr``: Adam's learning rate (PGD-AT, TRADES), or the peak of fast-AT's cyclic schedule (SGD with momentum
    0.9, rising linearly over the first 2/5 of training and falling to 0, as Wong et al.). fast-AT's default peak
    is 0.05: ``harden`` continues from the model's weights, and a higher peak can wreck a trained model (a user's
    small ONNX net on digits, 3 epochs: clean accuracy 86.7% at 0.05, 9.7% at 0.1 and 10.0% at 0.2, the last two
    caught by the gradient sanity check). From fresh weights Wong et al.'s 0.2 is better: on 20,000 Fashion-MNIST
    images for 4 epochs, PGD-20 robust accuracy 0.668 at 0.05, 0.676 at 0.1, 0.713 at 0.2, 0.704 at 0.3, and
    catastrophic overfitting in epoch 2 at 0.5; bench/hardening.py trains fast-AT so (``--fast-lr``).
    ``check_samples``: inputs held out of training for the per-epoch PGD-``check_steps`` check.
    ``schedule``: PGD-AT's and TRADES' learning rate over training, ``constant`` (the default: measured better for
    short runs, e.g. 10 epochs on digits: PGD-20 robust accuracy 0.75 against 0.64 annealed), ``cosine`` (annealed
    per step from ``lr`` to 0) or ``step`` (``lr`` until the last quarter of the epochs, then ``lr / 10``: robust
    accuracy jumps right after such a decay, Rice et al. 2020, and the best-epoch check keeps that epoch); fast-AT
    always uses its cyclic schedule.
    """

    method: Method = "pgd-at"
    eps: float = 0.1
    norm: Norm = Norm.LINF
    steps: int = 10
    step_size: float | None = None
    beta: float = 6.0
    epochs: int = 10
    batch_size: int = 128
    lr: float | None = None
    seed: int = 0
    check_samples: int = 500
    check_steps: int = 10
    overfit_drop: float = 0.2
    schedule: Literal["cosine", "constant", "step"] = "constant"

    def __post_init__(self) -> None:
        problems = []
        if self.method not in METHODS:
            problems.append(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if not isinstance(self.norm, Norm):
            problems.append(f"norm must be a Norm, got {self.norm!r}")
        for name in ("eps", "beta"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                problems.append(f"{name} must be a finite number > 0, got {v!r}")
        for name in ("steps", "epochs", "batch_size", "check_samples", "check_steps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                problems.append(f"{name} must be an int >= 1, got {v!r}")
        for name in ("step_size", "lr"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < 10):
                problems.append(f"{name} must be in (0, 10) or None, got {v!r}")
        if self.schedule not in ("cosine", "constant", "step"):
            problems.append(f"schedule must be constant, cosine or step, got {self.schedule!r}")
        if not 0 < self.overfit_drop < 1:
            problems.append(f"overfit_drop must be in (0, 1), got {self.overfit_drop!r}")
        if problems:
            raise ConfigError("invalid adversarial-training settings", problems=problems)

    @property
    def alpha(self) -> float:
        if self.step_size is not None:
            return float(self.step_size)
        if self.method == "n-fgsm":
            return float(self.eps)
        return 1.25 * self.eps if self.method == "fast-at" else 2.5 * self.eps / self.steps

    @property
    def learning_rate(self) -> float:
        return float(self.lr) if self.lr is not None else (0.05 if self.method in SINGLE_STEP else 1e-3)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["norm"] = self.norm.value
        d["step_size"], d["lr"] = self.alpha, self.learning_rate
        return d


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    loss: float
    clean_accuracy: float  # on the held-out check inputs
    robust_accuracy: float  # under PGD-check_steps at eps, on the same inputs
    seconds: float


@dataclass
class HardeningResult:
    """The hardened classifier (the best epoch's weights), the per-epoch history and what happened."""

    classifier: TorchClassifier
    settings: AdversarialTraining
    history: list[EpochRecord]
    best_epoch: int
    catastrophic_overfitting_at: int | None = None  # the epoch whose check collapsed; training stopped there
    resumed_from: int | None = None  # epochs already done when the run was resumed
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def training_record(self) -> dict[str, Any]:
        """What the hardened model's card records about its training."""
        return {
            "method": self.settings.method,
            "settings": self.settings.to_dict(),
            "best_epoch": self.best_epoch,
            "catastrophic_overfitting_at": self.catastrophic_overfitting_at,
            "resumed_from": self.resumed_from,
            "history": [asdict(r) for r in self.history],
            "seconds": round(self.seconds, 3),
            "threads": torch.get_num_threads(),
            "notes": list(self.notes),
        }


def _pgd_accuracy(clf: TorchClassifier, x: Tensor, y: Tensor, s: AdversarialTraining, g: torch.Generator) -> float:
    threat = ThreatModel(s.norm, s.eps)
    attack = PGD(threat, steps=s.check_steps, random_start=True)
    x_adv = attack.run(clf, x, y, generator=g).x_adv
    with torch.no_grad():
        return float((clf.predict_logits(x_adv).argmax(1) == y).float().mean())


def _trades_adversary(clf: TorchClassifier, x: Tensor, s: AdversarialTraining, g: torch.Generator) -> Tensor:
    """The point of the eps-ball around ``x`` maximising KL(f(x) || f(x')), by PGD on the KL (eval mode)."""
    bounds = clf.spec.bounds
    with torch.no_grad():
        p_clean = F.softmax(clf.logits(x), 1)
    xa = (x + 0.001 * torch.randn(x.shape, generator=g)).clamp(*bounds)
    for _ in range(s.steps):
        xa.requires_grad_(True)
        kl = F.kl_div(F.log_softmax(clf.logits(xa), 1), p_clean, reduction="sum")
        (grad,) = torch.autograd.grad(kl, xa)
        with torch.no_grad():
            xa = project(xa + s.alpha * normalize_step(grad, s.norm), x, s.eps, s.norm, bounds)
    return xa.detach()


def _n_fgsm_adversary(clf: TorchClassifier, x: Tensor, y: Tensor, s: AdversarialTraining, g: torch.Generator) -> Tensor:
    """N-FGSM (de Jorge et al., NeurIPS 2022): a uniform random start in the 2 * eps ball, one step of ``s.alpha``
    (eps by default) along the loss gradient's sign (or its normalised direction for L2), and *no* projection back
    to the eps-ball: the stronger noise and the unclipped step are what keep single-step training from overfitting
    catastrophically at 1x FGSM's cost. Only the input bounds clip (eval mode)."""
    bounds = clf.spec.bounds
    xn = random_start(x, 2 * s.eps, s.norm, bounds, g).requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(clf.logits(xn), y), xn)
    with torch.no_grad():
        return (xn + s.alpha * normalize_step(grad, s.norm)).clamp(*bounds).detach()


def overfit_epoch(history: list[EpochRecord], drop: float) -> int | None:
    """The epoch whose PGD check fell ``drop`` or more below the best before it (catastrophic overfitting)."""
    best = -1.0
    for r in history:
        if best >= 0 and r.robust_accuracy <= best - drop:
            return r.epoch
        best = max(best, r.robust_accuracy)
    return None


def check_training(
    classifier: object,
    x: Tensor,
    y: Tensor,
    settings: AdversarialTraining,
    *,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
) -> None:
    """Every problem :func:`adversarial_train` would refuse, before any work (the CLI calls it first)."""
    s = settings
    if not isinstance(classifier, TorchClassifier):
        raise NoGradientError(
            f"adversarial training needs a differentiable torch model (a TorchClassifier), got "
            f"{type(classifier).__name__}: ONNX models convertible by onnx2torch, torch.export, TorchScript and "
            "safetensors load as one"
        )
    spec = classifier.spec
    raise_if(
        tensor_problems(x, name="x", input_shape=spec.input_shape, bounds=spec.bounds)
        + label_problems(y, name="y", n=int(x.shape[0]), num_classes=spec.num_classes),
        "training data",
    )
    lo, hi = spec.bounds
    if s.norm is Norm.LINF and s.eps >= hi - lo:
        raise ConfigError(f"eps {s.eps:g} covers the model's whole input range [{lo:g}, {hi:g}]: choose a smaller eps")
    if x.shape[0] <= s.check_samples + s.batch_size // 4:
        raise ConfigError(
            f"{x.shape[0]} training inputs leave too few after holding out check_samples={s.check_samples}; "
            "lower check_samples"
        )
    check_resumable(checkpoint_dir, resume)


def adversarial_train(
    classifier: TorchClassifier,
    x: Tensor,
    y: Tensor,
    settings: AdversarialTraining,
    *,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    progress: Progress | None = None,
) -> HardeningResult:
    """Adversarially train ``classifier``'s module in place on ``(x, y)`` (inputs within its bounds), holding out
    ``settings.check_samples`` of them for the per-epoch PGD check; returns the best epoch's weights."""
    s = settings
    check_training(classifier, x, y, s, checkpoint_dir=checkpoint_dir, resume=resume)
    progress = progress or NullProgress()
    module = classifier.module
    g = make_generator(s.seed)
    perm = torch.randperm(x.shape[0], generator=make_generator(s.seed + 1))
    check, train = perm[: s.check_samples], perm[s.check_samples :]
    x_check, y_check, x_train, y_train = x[check], y[check], x[train], y[train]
    n = x_train.shape[0]
    steps_per_epoch = (n + s.batch_size - 1) // s.batch_size
    total_steps = s.epochs * steps_per_epoch
    lr = s.learning_rate
    if s.method in SINGLE_STEP:
        opt: torch.optim.Optimizer = torch.optim.SGD(module.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    else:
        opt = torch.optim.Adam(module.parameters(), lr=lr)
    history: list[EpochRecord] = []
    best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    best_robust, best_epoch, start_epoch, resumed_from = -1.0, 0, 0, None
    directory = Path(checkpoint_dir) if checkpoint_dir is not None else None
    meta_settings = s.to_dict()
    if resume and directory is not None:
        ck, best_state = load_checkpoint(directory, module=module, optimizer=opt, generator=g)
        before = {k: v for k, v in dict(ck.meta.get("settings", {})).items() if k != "epochs"}
        if before != {k: v for k, v in meta_settings.items() if k != "epochs"}:
            raise ConfigError(
                f"the checkpoint in {directory} was made with other settings ({ck.meta.get('settings')}); resume "
                "with the same ones (only epochs may grow)"
            )
        history = [EpochRecord(**r) for r in ck.meta["history"]]
        best_robust, best_epoch = float(ck.meta["best_robust"]), int(ck.meta["best_epoch"])
        start_epoch = resumed_from = ck.epoch
    threat = ThreatModel(s.norm, s.eps)
    pgd = PGD(threat, steps=s.steps, step_size=s.alpha, random_start=True, early_stop=False)
    fgsm = PGD(threat, steps=1, step_size=s.alpha, random_start=True, early_stop=False)
    progress.task(f"{s.method} training", (s.epochs - start_epoch) * steps_per_epoch)
    t0 = time.perf_counter()
    overfit_at = None
    for epoch in range(start_epoch, s.epochs):
        e0 = time.perf_counter()
        order = torch.randperm(n, generator=g)
        losses = []
        for i, sl in enumerate(batch_slices(n, s.batch_size)):
            idx = order[sl]
            xb, yb = x_train[idx], y_train[idx]
            t = (epoch * steps_per_epoch + i) / total_steps
            if s.method in SINGLE_STEP:  # cyclic learning rate, per step
                for group in opt.param_groups:
                    group["lr"] = lr * (t / 0.4 if t < 0.4 else (1 - t) / 0.6)
            elif s.schedule == "cosine":
                for group in opt.param_groups:
                    group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * t))
            elif s.schedule == "step":
                for group in opt.param_groups:
                    group["lr"] = lr / 10 if epoch >= max(1, int(0.75 * s.epochs)) else lr
            if s.method == "trades":
                xa = _trades_adversary(classifier, xb, s, g)
                module.train()
                logits = classifier.train_logits(xb)
                kl = F.kl_div(
                    F.log_softmax(classifier.train_logits(xa), 1), F.softmax(logits, 1), reduction="batchmean"
                )
                loss = F.cross_entropy(logits, yb) + s.beta * kl
            else:
                if s.method == "n-fgsm":
                    xa = _n_fgsm_adversary(classifier, xb, yb, s, g)
                else:
                    attack = fgsm if s.method == "fast-at" else pgd
                    xa = attack.run(classifier, xb, yb, generator=g).x_adv  # crafted in eval mode
                module.train()
                loss = F.cross_entropy(classifier.train_logits(xa), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            module.eval()
            losses.append(float(loss.detach()))
            progress.advance()
        with torch.no_grad():
            clean = float((classifier.predict_logits(x_check).argmax(1) == y_check).float().mean())
        robust = _pgd_accuracy(classifier, x_check, y_check, s, make_generator(s.seed + 2))
        history.append(EpochRecord(epoch + 1, sum(losses) / len(losses), clean, robust, time.perf_counter() - e0))
        if robust > best_robust:
            best_robust, best_epoch = robust, epoch + 1
            best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
        overfit_at = overfit_epoch(history, s.overfit_drop)
        if directory is not None:
            meta = {
                "settings": meta_settings,
                "history": [asdict(r) for r in history],
                "best_robust": best_robust,
                "best_epoch": best_epoch,
            }
            save_checkpoint(
                directory,
                module=module,
                optimizer=opt,
                generator=g,
                best=best_state,
                checkpoint=Checkpoint(epoch + 1, meta),
            )
        if overfit_at is not None:
            break
    module.load_state_dict(best_state)
    module.eval()
    notes = []
    if overfit_at is not None:
        notes.append(
            f"catastrophic overfitting at epoch {overfit_at}: PGD accuracy on held-out inputs fell by "
            f">= {s.overfit_drop:.0%} from its best; training stopped and epoch {best_epoch}'s weights were kept"
        )
    elif best_epoch != history[-1].epoch:
        notes.append(f"the best PGD check was at epoch {best_epoch} of {history[-1].epoch}; those weights were kept")
    if resumed_from is not None:
        notes.append(f"resumed after epoch {resumed_from}")
    return HardeningResult(
        classifier, s, history, best_epoch, overfit_at, resumed_from, time.perf_counter() - t0, notes
    )
