"""Membership inference: does the model reveal which points it was trained on?

Every attack scores candidate points whose membership is known (members: training points; non-members: points the
model never saw); the higher the score, the more "member". How well the scores separate the two sets is what the
model leaks: ROC AUC (0.5 is chance), balanced accuracy, and above all the true-positive rate at a low false-positive
rate (0.1% and 1%), which says whether *some* members can be identified with confidence (Carlini et al. 2022, "Membership
Inference Attacks From First Principles": an average-case AUC hides the leak that matters).

Attacks are registered in :data:`MEMBERSHIP_ATTACKS` (one file each): the loss threshold (Yeom et al. 2018) needs
only the target; LiRA and RMIA are calibrated with reference models trained by Bastion with the target's recipe
(``bastion.attacks.inference.reference``). :func:`membership_inference` trains (or reuses) the reference models once
and runs every attack asked for on the same signals.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from bastion._cache import digest_path, load_or_train
from bastion._progress import NullProgress, Progress
from bastion._registry import Registry
from bastion._torch import batch_slices, make_generator
from bastion._validate import label_problems, raise_if, tensor_problems
from bastion.attacks.inference.reference import Recipe, ReferenceModels, balanced_keep, train_references
from bastion.errors import ConfigError, InputValidationError

Pair = tuple[Tensor, Tensor]


@dataclass(frozen=True)
class Signals:
    """What the attacks score from: logits (float64) of the target and of the reference models on the candidates.

    ``keep[k, i]`` is True when candidate ``i`` trained reference model ``k``."""

    labels: Tensor  # (N,)
    target: Tensor  # (N, C)
    references: Tensor | None = None  # (K, N, C)
    keep: Tensor | None = None  # (K, N) bool


@dataclass(frozen=True)
class MembershipAttack:
    """A registered attack: ``score(signals)`` gives one score per candidate, higher meaning member.

    ``references`` says whether it needs reference models; ``online`` whether it uses the ones a candidate trained
    (an offline attack uses only models that never saw the candidate, so they can be trained before it exists)."""

    name: str
    score: Callable[[Signals], Tensor]
    references: bool
    online: bool
    paper: str
    description: str


MEMBERSHIP_ATTACKS: Registry[MembershipAttack] = Registry("membership attack")


def logit_margin(logits: Tensor, labels: Tensor) -> Tensor:
    """``z_y - logsumexp(z_others)`` over the last axis: log(p_y / (1 - p_y)), the logit-scaled confidence LiRA
    models as Gaussian, and an exact order-preserving stand-in for minus the loss that does not round to 0 for
    confidently right inputs (float32 losses tie there, which made the TPR at low FPR 0)."""
    lab = labels.expand(logits.shape[:-1]).unsqueeze(-1)
    z = logits.double()
    others = z.scatter(-1, lab, float("-inf"))
    return z.gather(-1, lab).squeeze(-1) - torch.logsumexp(others, dim=-1)


def _loss_score(s: Signals) -> Tensor:
    return logit_margin(s.target, s.labels)


MEMBERSHIP_ATTACKS.add(
    "loss",
    MembershipAttack(
        "loss",
        _loss_score,
        references=False,
        online=False,
        paper="Yeom, Giacomelli, Fredrikson & Jha, CSF 2018",
        description="a low loss (high logit-scaled confidence in the true label) says member",
    ),
)


@dataclass(frozen=True)
class MembershipResult:
    """How well one attack's scores separate members from non-members."""

    attack: str
    auc: float
    balanced_accuracy: float
    tpr_at_1pct_fpr: float
    tpr_at_01pct_fpr: float
    advantage: float
    members: int
    non_members: int
    seconds: float = 0.0
    roc: tuple[tuple[float, ...], tuple[float, ...]] = ((), ())

    def to_dict(self) -> dict[str, Any]:
        return {
            "attack": self.attack,
            "auc": self.auc,
            "balanced_accuracy": self.balanced_accuracy,
            "advantage": self.advantage,
            "tpr_at_1pct_fpr": self.tpr_at_1pct_fpr,
            "tpr_at_01pct_fpr": self.tpr_at_01pct_fpr,
            "members": self.members,
            "non_members": self.non_members,
            "seconds": self.seconds,
        }


def tpr_at(fpr: np.ndarray, tpr: np.ndarray, at: float) -> float:
    """The highest TPR of a threshold whose FPR is at most ``at`` (0 when no threshold is that strict)."""
    ok = fpr <= at
    return float(tpr[ok].max()) if bool(ok.any()) else 0.0


def evaluate_scores(attack: str, scores: Tensor, member: Tensor, seconds: float = 0.0) -> MembershipResult:
    """The metrics of ``scores`` (higher: member) against the truth ``member`` (bool, same length)."""
    from sklearn.metrics import roc_auc_score, roc_curve

    s = scores.double().numpy()
    if not np.isfinite(s).all():
        raise InputValidationError(f"membership attack {attack} produced non-finite scores")
    truth = member.numpy().astype(int)
    fpr, tpr, _ = roc_curve(truth, s)
    advantage = float((tpr - fpr).max())
    n_in, n_out = int(truth.sum()), int((1 - truth).sum())
    keep = _roc_points(fpr, tpr)
    return MembershipResult(
        attack=attack,
        auc=float(roc_auc_score(truth, s)),
        balanced_accuracy=0.5 + advantage / 2,  # the best threshold's (TPR + TNR) / 2, whatever the counts
        tpr_at_1pct_fpr=tpr_at(fpr, tpr, 0.01),
        tpr_at_01pct_fpr=tpr_at(fpr, tpr, 0.001),
        advantage=advantage,
        members=n_in,
        non_members=n_out,
        seconds=seconds,
        roc=(tuple(float(v) for v in fpr[keep]), tuple(float(v) for v in tpr[keep])),
    )


def _roc_points(fpr: np.ndarray, tpr: np.ndarray, points: int = 400) -> np.ndarray:
    """At most ``points`` indices of the ROC, spread evenly in log(FPR) so the low-FPR end a log plot shows is
    kept, plus both ends."""
    if fpr.size <= points:
        return np.arange(fpr.size)
    grid = np.logspace(-5, 0, points)
    idx = np.unique(np.clip(np.searchsorted(fpr, grid, side="right") - 1, 0, fpr.size - 1))
    return np.unique(np.concatenate([[0], idx, [fpr.size - 1]]))


def _check_pair(pair: object, name: str, spec: Any) -> Pair:
    if not isinstance(pair, tuple) or len(pair) != 2:
        raise InputValidationError(f"{name} must be a pair (inputs, labels)")
    x, y = pair
    raise_if(
        tensor_problems(x, name=f"{name} x", input_shape=spec.input_shape)
        + label_problems(
            y, name=f"{name} y", n=int(x.shape[0]) if isinstance(x, Tensor) else None, num_classes=spec.num_classes
        ),
        "membership inference data",
    )
    if x.shape[0] < 10:
        raise InputValidationError(f"{name} needs at least 10 points, got {x.shape[0]}; pass more")
    return x, y


def _logits(model: Any, x: Tensor, batch_size: int = 512) -> Tensor:
    with torch.no_grad():
        return torch.cat([model.predict_logits(x[s]).double() for s in batch_slices(x.shape[0], batch_size)])


def loss_threshold(model: object, members: Pair, non_members: Pair) -> MembershipResult:
    """The loss-threshold attack alone (no reference models): score every point by minus its loss and measure how
    well that separates ``members`` from ``non_members``; equally many of each make the AUC read as a chance rate."""
    spec = model.spec  # type: ignore[attr-defined]
    xi, yi = _check_pair(members, "members", spec)
    xo, yo = _check_pair(non_members, "non_members", spec)
    start = time.perf_counter()
    scores = torch.cat([logit_margin(_logits(model, xi), yi), logit_margin(_logits(model, xo), yo)])
    truth = torch.cat([torch.ones(xi.shape[0], dtype=torch.bool), torch.zeros(xo.shape[0], dtype=torch.bool)])
    return evaluate_scores("loss", scores, truth, time.perf_counter() - start)


@dataclass(frozen=True)
class MembershipReport:
    """Every attack's result on one candidate set, with what the reference models cost."""

    results: tuple[MembershipResult, ...]
    members: int
    non_members: int
    reference_models: int = 0
    reference_seconds: float = 0.0
    reference_threads: int = 0
    reference_cached: bool = False
    recipe: dict[str, Any] = field(default_factory=dict)

    def best(self, metric: str = "tpr_at_1pct_fpr") -> MembershipResult:
        return max(self.results, key=lambda r: float(getattr(r, metric)))

    def to_dict(self) -> dict[str, Any]:
        return {
            "results": [r.to_dict() for r in self.results],
            "members": self.members,
            "non_members": self.non_members,
            "reference_models": self.reference_models,
            "reference_seconds": self.reference_seconds,
            "reference_threads": self.reference_threads,
            "reference_cached": self.reference_cached,
            "recipe": dict(self.recipe),
        }


DEFAULT_ATTACKS = ("loss", "lira-offline", "lira-online", "rmia-offline", "rmia-online")


def membership_inference(
    model: Any,
    members: Pair,
    non_members: Pair,
    *,
    attacks: Sequence[str] = DEFAULT_ATTACKS,
    recipe: Recipe | None = None,
    reference_models: int = 16,
    seed: int = 0,
    cache: bool = True,
    progress: Progress | None = None,
) -> MembershipReport:
    """Run membership attacks on the candidates ``members`` ∪ ``non_members`` (known membership).

    Attacks that need reference models get ``reference_models`` of them (an even number), trained with ``recipe``
    on balanced random halves of the candidates (each candidate trains half of them: the online attacks use both
    halves, the offline ones only the models that never saw it). With ``cache``, trained reference models are kept
    under the Bastion cache, keyed by a digest of the candidates, the recipe and the seed."""
    spec = model.spec
    xi, yi = _check_pair(members, "members", spec)
    xo, yo = _check_pair(non_members, "non_members", spec)
    chosen = [MEMBERSHIP_ATTACKS.get(a) for a in attacks]
    if not chosen:
        raise ConfigError("attacks is empty; name at least one of: " + ", ".join(MEMBERSHIP_ATTACKS.names()))
    need_refs = any(a.references for a in chosen)
    if need_refs:
        if recipe is None:
            raise ConfigError(
                "LiRA and RMIA need the target's training recipe for their reference models: pass recipe= "
                "(Recipe.from_card(card) for a Bastion model)"
            )
        if (
            isinstance(reference_models, bool)
            or not isinstance(reference_models, int)
            or reference_models < 2
            or reference_models % 2
        ):
            raise ConfigError(f"reference_models must be an even int >= 2, got {reference_models!r}")
    progress = progress or NullProgress()
    x = torch.cat([xi, xo])
    y = torch.cat([yi, yo])
    truth = torch.cat([torch.ones(xi.shape[0], dtype=torch.bool), torch.zeros(xo.shape[0], dtype=torch.bool)])
    target = _logits(model, x)
    refs: ReferenceModels | None = None
    cached = False
    if need_refs:
        assert recipe is not None
        refs, cached = _references(recipe, spec, x, y, reference_models, seed, cache, progress)
    signals = Signals(
        labels=y,
        target=target,
        references=refs.logits(x).double() if refs is not None else None,
        keep=refs.keep if refs is not None else None,
    )
    results = []
    for attack in chosen:
        start = time.perf_counter()
        scores = attack.score(signals)
        results.append(evaluate_scores(attack.name, scores, truth, time.perf_counter() - start))
    return MembershipReport(
        results=tuple(results),
        members=int(xi.shape[0]),
        non_members=int(xo.shape[0]),
        reference_models=refs.count if refs is not None else 0,
        reference_seconds=refs.seconds if refs is not None else 0.0,
        reference_threads=refs.threads if refs is not None else 0,
        reference_cached=cached,
        recipe=recipe.to_dict() if recipe is not None and need_refs else {},
    )


def _references(
    recipe: Recipe, spec: Any, x: Tensor, y: Tensor, count: int, seed: int, cache: bool, progress: Progress
) -> tuple[ReferenceModels, bool]:
    def train() -> ReferenceModels:
        keep = balanced_keep(count, int(x.shape[0]), make_generator(seed))
        return train_references(recipe, spec, x, y, keep, seed=seed, progress=progress)

    if not cache:
        return train(), False
    path = digest_path("membership-references", "", x, [recipe.to_dict(), spec.to_dict(), count, seed, y.tolist()])
    hit = path.is_file()
    return load_or_train(path, "membership reference models", ReferenceModels.load, train), hit
