"""Confusion training: poisoned samples are the ones a deliberately confused model still fits.

Detectors over a trained model's features (:mod:`bastion.defenses.data.poison`) assume the poison sits apart from its
class in the representation; an attacker who knows that can remove the separation (Qi et al.'s adaptive blend, ICLR
2023: partial triggers and correctly labelled cover samples), and on Fashion-MNIST all four feature detectors then
find none of it. Confusion training (Qi, Xie, Wang, Wu, Mahloujifar & Mittal, "Towards a Proactive ML Approach for
Detecting Backdoor Poison Samples", USENIX Security 2023) does not wait for the attack to show itself: it keeps
training the model on the inspected rows while, with ``weight`` times their weight, training it on a small set of
*trusted clean* rows under labels drawn at random (never the true one). The random labels make every benign feature
useless — the model is driven to answer 1/C for what clean data looks like — while the trigger, which the trusted rows
never carry, keeps predicting its target. A row the confused model still answers with its given label is therefore
one whose label is explained by something other than its content: a backdoor's poison.

What Bastion adds to the paper, from measuring it on Fashion-MNIST (docs/data-integrity.md):

- **Cross-fitting.** Each half of the inspected rows is scored by a model confused while training on the *other*
  half: a row the model trained on can be fitted by memorising it, and with 5,000 rows that made clean rows look
  fitted after about 1,000 steps. The trigger is a general rule, so poison in the unseen half is fitted all the same.
- **A held-out stop.** The trusted rows are split; the confusion uses 80%, and every ``check_every`` steps the other
  20% (clean, never trained on) are scored. When more than ``max_false`` of them are fitted, confusion is breaking
  down (the model has started to memorise the confusion set and relearn the classes), and the last checkpoint before
  that is used. That share is also the measured false-positive rate of the threshold on clean data.
- **Absolute thresholds** instead of the paper's per-class Gaussian-mixture test: a row is fitted when the model
  gives its label at least ``1/C + margin (1 - 1/C)`` (0.25 for 10 classes), where clean rows sit at 1/C; a class is
  attacked when at least ``min_flagged`` rows and ``min_share`` of it are fitted. Within an attacked class the bar
  drops to ``1/C + attacked_margin (1 - 1/C)`` (0.15): clean rows stay within 0.09-0.12 there too, and the adaptive
  blend's weakest poisons sit between the two bars (recall 0.88 at 0.25 alone on Fashion-MNIST).

Cost: two confusion runs of at most ``steps`` steps of two batches each (about 150 s over Fashion-MNIST's 60,000
training images on two CPU cores), plus scoring. It needs a model that can be trained (a torch module already fitted
on the inspected rows, whose architecture learns the data) and a few hundred trusted clean rows of the same kind.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion._progress import NullProgress, Progress
from bastion.errors import ConfigError

MIN_TRUSTED = 50


@dataclass(frozen=True)
class ConfusionSettings:
    """How confusion training runs and decides (module docstring): at most ``steps`` steps per fold, a held-out check
    every ``check_every``; the confusion batch weighs ``weight`` times the inspected batch (the paper's lambda);
    ``margin`` places the fitted threshold between 1/C and 1 (``attacked_margin`` the lower one used inside a class
    judged attacked); ``max_false`` is the largest share of held-out trusted
    rows fitted before the run is stopped; ``holdout`` the share of trusted rows kept for that check."""

    steps: int = 1000
    check_every: int = 250
    weight: float = 10.0
    batch_size: int = 128
    lr: float = 1e-3
    margin: float = 1 / 6
    attacked_margin: float = 1 / 18
    max_false: float = 0.005
    min_share: float = 0.01
    min_flagged: int = 10
    holdout: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        problems = []
        if self.steps < 1 or not 1 <= self.check_every <= self.steps:
            problems.append(f"steps must be >= 1 and check_every in [1, steps], got {self.steps}, {self.check_every}")
        if not self.weight > 1:
            problems.append(f"weight must be > 1 (the confusion batch outweighs the inspected one), got {self.weight}")
        if self.batch_size < 1 or not 0 < self.lr < 1:
            problems.append(f"batch_size must be >= 1 and lr in (0, 1), got {self.batch_size}, {self.lr}")
        if not 0 < self.attacked_margin <= self.margin < 1:
            problems.append(f"need 0 < attacked_margin <= margin < 1, got {self.attacked_margin}, {self.margin}")
        if not 0 <= self.max_false < 1 or not 0 <= self.min_share < 1:
            problems.append("max_false and min_share must be in [0, 1)")
        if not 0 < self.holdout < 1 or self.min_flagged < 1:
            problems.append(f"holdout must be in (0, 1) and min_flagged >= 1, got {self.holdout}, {self.min_flagged}")
        if problems:
            raise ConfigError("invalid confusion-training settings", problems=problems)

    def threshold(self, num_classes: int, *, attacked: bool = False) -> float:
        """The probability of its label from which a row counts as fitted by the confused model (inside a class
        already judged attacked with ``attacked``)."""
        return 1 / num_classes + (self.attacked_margin if attacked else self.margin) * (1 - 1 / num_classes)


@dataclass(frozen=True)
class ConfusionClass:
    """One class: its size, how many of its rows the confused model fitted, that share, and the verdict."""

    label: int
    size: int
    fitted: int
    share: float
    attacked: bool


@dataclass(frozen=True)
class ConfusionReport:
    """The decision over a training set: each row's probability of its label under the confused model that did not
    train on it (``scores``), the flagged rows (the rows of attacked classes at or above ``attacked_threshold``),
    each class's verdict, and per fold the steps used and the held-out false-fit share at each check."""

    threshold: float
    attacked_threshold: float
    scores: Tensor  # (N,) float64
    flagged: Tensor  # (N,) bool
    classes: tuple[ConfusionClass, ...]
    folds: tuple[dict[str, Any], ...]
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def attacked(self) -> list[int]:
        return [c.label for c in self.classes if c.attacked]

    @property
    def indices(self) -> Tensor:
        return self.flagged.nonzero().flatten()

    @property
    def conclusive(self) -> bool:
        """False when a fold never reached a checkpoint whose held-out rows were confused (the model could not be
        made to forget the classes): then nothing is flagged and nothing may be read as clean."""
        return all(int(f["steps"]) > 0 for f in self.folds)

    @property
    def false_rate(self) -> float:
        """The held-out trusted rows' fitted share at the checkpoints used (the larger of the two folds)."""
        return max(float(f["false_rate"]) for f in self.folds)

    def to_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "attacked_threshold": self.attacked_threshold,
            "attacked_classes": self.attacked,
            "conclusive": self.conclusive,
            "flagged": int(self.flagged.sum()),
            "held_out_false_rate": self.false_rate,
            "classes": [asdict(c) for c in self.classes],
            "folds": list(self.folds),
            "settings": dict(self.settings),
        }


def _validate(module: Any, x: Tensor, y: Tensor, tx: Tensor, ty: Tensor, num_classes: int) -> None:
    problems = []
    if not isinstance(module, nn.Module):
        problems.append(f"confusion training needs a torch module to train, got {type(module).__name__}")
    if not isinstance(num_classes, int) or num_classes < 2:
        problems.append(f"num_classes must be an int >= 2, got {num_classes!r}")
    for name, (a, b) in (("the inspected rows", (x, y)), ("the trusted rows", (tx, ty))):
        if not isinstance(a, Tensor) or not isinstance(b, Tensor) or b.dim() != 1 or a.shape[0] != b.shape[0]:
            problems.append(f"{name} must be an (N, ...) tensor with (N,) labels")
        elif b.numel() and (int(b.min()) < 0 or int(b.max()) >= max(num_classes, 1)):
            problems.append(f"{name} have labels outside 0..{num_classes - 1}")
    if not problems and x.shape[1:] != tx.shape[1:]:
        problems.append(f"trusted rows have shape {tuple(tx.shape[1:])}, the inspected rows {tuple(x.shape[1:])}")
    if not problems and ty.numel() < MIN_TRUSTED:
        problems.append(
            f"confusion training needs at least {MIN_TRUSTED} trusted clean rows (a few hundred is better), got "
            f"{ty.numel()}: pass more trusted data"
        )
    if not problems and x.shape[0] < 4:
        problems.append(f"too few rows to inspect ({x.shape[0]})")
    if problems:
        raise ConfigError("cannot run confusion training", problems=problems)


def _probs(module: nn.Module, x: Tensor, y: Tensor, batch: int = 2048) -> Tensor:
    """Probability of each row's label, float64, in eval mode."""
    module.eval()
    with torch.no_grad():
        out = [
            module(x[i : i + batch]).float().softmax(1).gather(1, y[i : i + batch, None])
            for i in range(0, len(y), batch)
        ]
    return torch.cat(out).flatten().double()


def _confuse(
    base: nn.Module,
    train_x: Tensor,
    train_y: Tensor,
    conf_x: Tensor,
    conf_y: Tensor,
    held_x: Tensor,
    held_y: Tensor,
    num_classes: int,
    threshold: float,
    s: ConfusionSettings,
    generator: torch.Generator,
    progress: Progress,
) -> tuple[nn.Module, dict[str, Any]]:
    """One confusion run from a copy of ``base``; returns the model at the last checkpoint whose held-out false-fit
    share was within ``s.max_false`` (the start, if none was) and what happened."""
    model = copy.deepcopy(base)
    opt = torch.optim.Adam(model.parameters(), lr=s.lr)
    best = copy.deepcopy(model.state_dict())
    used, checks, stopped = 0, [], False
    n, m, b = train_x.shape[0], conf_x.shape[0], s.batch_size
    false_rate = float((_probs(model, held_x, held_y) >= threshold).double().mean())
    model.train()
    for step in range(1, s.steps + 1):
        ci = torch.randint(0, m, (b,), generator=generator)
        wrong = (conf_y[ci] + torch.randint(1, num_classes, (b,), generator=generator)) % num_classes
        ii = torch.randint(0, n, (b,), generator=generator)
        out = model(torch.cat([conf_x[ci], train_x[ii]]))
        loss = (s.weight - 1) * F.cross_entropy(out[:b], wrong) + F.cross_entropy(out[b:], train_y[ii])
        opt.zero_grad(set_to_none=True)
        (loss / s.weight).backward()
        opt.step()
        progress.advance()
        if step % s.check_every == 0 or step == s.steps:
            rate = float((_probs(model, held_x, held_y) >= threshold).double().mean())
            checks.append({"step": step, "held_out_false_rate": rate})
            if rate > s.max_false:
                stopped = True
                progress.advance(s.steps - step)
                break
            best, used, false_rate = copy.deepcopy(model.state_dict()), step, rate
            model.train()
    model.load_state_dict(best)
    model.eval()
    return model, {"steps": used, "stopped_early": stopped, "false_rate": false_rate, "checks": checks}


def confusion_training(
    module: Any,
    x: Tensor,
    y: Tensor,
    trusted_x: Tensor,
    trusted_y: Tensor,
    *,
    num_classes: int,
    settings: ConfusionSettings | None = None,
    progress: Progress | None = None,
) -> ConfusionReport:
    """Score every row of ``x``/``y`` by confusion training (module docstring). ``module``: a torch model already
    trained on these rows (it is copied, never changed); ``trusted_x``/``trusted_y``: clean rows of the same kind
    whose labels are right (a held-out or test split)."""
    s = settings or ConfusionSettings()
    _validate(module, x, y, trusted_x, trusted_y, num_classes)
    progress = progress or NullProgress()
    threshold = s.threshold(num_classes)
    gen = torch.Generator().manual_seed(s.seed)
    param = next(module.parameters(), None)
    dev = param.device if param is not None else torch.device("cpu")
    channels_last = x.dim() == 4 and dev.type == "cpu" and any(isinstance(m, nn.Conv2d) for m in module.modules())

    def prep(t: Tensor) -> Tensor:
        t = t.to(dev, torch.float32)
        return t.contiguous(memory_format=torch.channels_last) if channels_last else t.contiguous()

    base = copy.deepcopy(module).float()
    if channels_last:
        base = base.to(memory_format=torch.channels_last)
    xs, ys = prep(x), y.to(dev).long()
    order = torch.randperm(trusted_y.numel(), generator=gen)
    n_held = max(1, round(s.holdout * order.numel()))
    held, conf = order[:n_held], order[n_held:]
    conf_x, conf_y = prep(trusted_x[conf]), trusted_y[conf].to(dev).long()
    held_x, held_y = prep(trusted_x[held]), trusted_y[held].to(dev).long()
    perm = torch.randperm(ys.numel(), generator=gen)
    halves = (perm[: ys.numel() // 2], perm[ys.numel() // 2 :])
    scores = torch.full((ys.numel(),), math.nan, dtype=torch.float64)
    folds = []
    progress.task("confusion training (two folds)", 2 * s.steps)
    for k, (fit_on, scored) in enumerate(((halves[0], halves[1]), (halves[1], halves[0]))):
        model, info = _confuse(
            base, xs[fit_on], ys[fit_on], conf_x, conf_y, held_x, held_y, num_classes, threshold, s, gen, progress
        )
        scores[scored] = _probs(model, xs[scored], ys[scored]).cpu()
        folds.append({"fold": k, "rows_scored": int(scored.numel())} | info)
    fitted = scores >= threshold
    inner = scores >= s.threshold(num_classes, attacked=True)
    if not all(f["steps"] > 0 for f in folds):  # an unconfused model fits every row: that says nothing
        fitted[:] = False
    flagged = torch.zeros_like(fitted)
    yc = y.cpu()
    classes = []
    for label in range(num_classes):
        idx = (yc == label).nonzero().flatten()
        hits = int(fitted[idx].sum())
        share = hits / idx.numel() if idx.numel() else 0.0
        attacked = hits >= s.min_flagged and share >= s.min_share
        if attacked:
            flagged[idx[inner[idx]]] = True
        classes.append(ConfusionClass(label, int(idx.numel()), hits, share, attacked))
    return ConfusionReport(
        threshold,
        s.threshold(num_classes, attacked=True),
        scores,
        flagged,
        tuple(classes),
        tuple(folds),
        asdict(s) | {"trusted_rows": int(trusted_y.numel()), "held_out_rows": int(n_held)},
    )
