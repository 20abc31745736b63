"""The Attack protocol, its result, and the shared template of evasion attacks.

An attack keeps its settings in its (frozen dataclass) constructor and takes data in :meth:`run`, so one configured
attack can be applied to many batches and models, and a suite is simply a tuple of configured attacks.
"""

from __future__ import annotations

import abc
import dataclasses
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from torch import Tensor

from bastion._registry import Registry
from bastion._validate import label_problems, raise_if, tensor_problems
from bastion.attacks._losses import succeeded
from bastion.attacks._projection import per_sample_norm
from bastion.errors import ConfigError, RemoteModelError
from bastion.models.base import Classifier, DifferentiableClassifier
from bastion.types import Bounds, Norm, ThreatModel


@dataclass(frozen=True)
class AttackResult:
    """What an attack produced for a batch of N inputs.

    ``success[i]`` is True when ``x_adv[i]`` is adversarial (untargeted: not classified as the true label;
    targeted: classified as the target) as checked by one final query of the model. ``norms`` are the perturbation
    sizes in the threat model's norm, ``queries`` the model evaluations spent per input (forward passes, whether
    or not a gradient was taken), ``adv_labels`` the model's labels for ``x_adv``. ``details`` holds what is
    particular to one attack (e.g. a cascade's per-component contributions).

    ``complete`` is False when the attack was cut short (a remote model failed mid-attack; ``error`` says how):
    the result then holds what the attack had found so far, ``success`` as the model last answered and
    ``adv_labels`` -1 where unknown.
    """

    x_adv: Tensor
    success: Tensor
    norms: Tensor
    queries: Tensor
    adv_labels: Tensor
    attack: str
    threat: ThreatModel
    params: dict[str, Any]
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)
    complete: bool = True
    error: str | None = None

    @property
    def success_rate(self) -> float:
        return float(self.success.float().mean()) if self.success.numel() else 0.0

    def __len__(self) -> int:
        return int(self.success.shape[0])

    def __repr__(self) -> str:
        state = "" if self.complete else f", partial: {self.error}"
        return (
            f"AttackResult({self.attack}, {self.threat.norm.value} eps={self.threat.eps:g}, n={len(self)}, "
            f"success_rate={self.success_rate:.3f}, seconds={self.seconds:.2f}{state})"
        )


@runtime_checkable
class Attack(Protocol):
    """A configured attack: settings in the constructor, data in :meth:`run`."""

    name: ClassVar[str]

    @property
    def threat(self) -> ThreatModel: ...

    def run(
        self,
        model: Classifier,
        x: Tensor,
        y: Tensor,
        *,
        target: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> AttackResult: ...


ATTACKS: Registry[type[Attack]] = Registry("attack")
log = logging.getLogger(__name__)


@dataclass
class AttackState:
    """Buffers an attack fills in place as it goes, so an interrupted attack still leaves a usable result.

    ``x_adv`` starts as the inputs, ``queries`` at zero, ``done`` False; an attack sets ``done[i]`` when it has
    seen input i become adversarial (judged by the model's own answers) and keeps ``x_adv[i]`` at that point.
    """

    x_adv: Tensor
    queries: Tensor
    done: Tensor
    details: dict[str, Any] = field(default_factory=dict)

    def pending(self, rounds: int) -> Iterator[Tensor]:
        """Indices of the inputs not yet broken, once per round (restart); stops early when none are left."""
        for _ in range(rounds):
            idx = (~self.done).nonzero().squeeze(1)
            if idx.numel() == 0:
                return
            yield idx


@dataclass(frozen=True)
class EvasionAttack(abc.ABC):
    """Template for evasion attacks: validation, device placement, timing and the final success check.

    Subclasses set ``name`` and ``norms`` and implement :meth:`_perturb`; the template guarantees every result
    respects the threat model (checked again here, so a subclass bug cannot leak an out-of-ball example).
    """

    name: ClassVar[str] = "evasion"
    norms: ClassVar[frozenset[Norm]] = frozenset({Norm.LINF, Norm.L2})
    white_box: ClassVar[bool] = True
    supports_targeted: ClassVar[bool] = True
    threat_name: ClassVar[str] = "adversarial examples (evasion)"
    atlas: ClassVar[tuple[str, ...]] = ("AML.T0043", "AML.T0015")
    owasp: ClassVar[str] = "ML01:2023 Input Manipulation Attack"

    threat: ThreatModel = None  # type: ignore[assignment]  # required: there is no safe default budget

    def __post_init__(self) -> None:
        if self.threat is None:
            raise ConfigError(
                f"{type(self).__name__} needs a threat model saying what the attacker may change, e.g. "
                f"{type(self).__name__}(ThreatModel(Norm.LINF, eps=8 / 255)); there is no default budget"
            )
        if not isinstance(self.threat, ThreatModel):
            raise ConfigError(f"threat must be a ThreatModel, got {type(self.threat).__name__}")
        if self.threat.norm not in self.norms:
            supported = ", ".join(sorted(n.value for n in self.norms))
            raise ConfigError(f"{self.name} does not support norm {self.threat.norm.value!r}; use one of: {supported}")
        problems = self._check_settings()
        if self.threat.targeted and not self.supports_targeted:
            problems.append(f"{self.name} chooses its own targets; use an untargeted ThreatModel")
        if problems:
            raise ConfigError(f"invalid {self.name} settings", problems=problems)

    def _check_settings(self) -> list[str]:
        return []

    def params(self) -> dict[str, Any]:
        """The attack's settings other than the threat model, as plain data."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "threat"}

    def run(
        self,
        model: Classifier,
        x: Tensor,
        y: Tensor,
        *,
        target: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> AttackResult:
        """Attack inputs ``x`` ``(N, *input_shape)`` with true labels ``y`` ``(N,)``; targets when targeted."""
        spec = getattr(model, "spec", None)
        if spec is None or not hasattr(model, "predict_logits"):
            raise ConfigError(f"model must be a bastion Classifier, got {type(model).__name__}")
        if self.white_box and not isinstance(model, DifferentiableClassifier):
            raise ConfigError(
                f"{self.name} is a white-box attack and needs a DifferentiableClassifier (e.g. TorchClassifier); "
                f"{type(model).__name__} only answers queries — use a black-box attack instead"
            )
        bounds = self.threat.resolve_bounds(spec.bounds)
        problems = tensor_problems(x, name="x", input_shape=spec.input_shape, bounds=bounds)
        n = int(x.shape[0]) if isinstance(x, Tensor) and x.dim() > 0 else None
        problems += label_problems(y, name="y", n=n, num_classes=spec.num_classes)
        if self.threat.targeted:
            if target is None:
                problems.append("the threat model is targeted: pass target= (one class index per input)")
            else:
                problems += label_problems(target, name="target", n=n, num_classes=spec.num_classes)
        elif target is not None:
            problems.append("target= given but the threat model is untargeted; set ThreatModel(targeted=True)")
        if generator is not None and not isinstance(generator, torch.Generator):
            problems.append(f"generator must be a torch.Generator, got {type(generator).__name__}")
        raise_if(problems, f"{self.name} input")

        device: torch.device = getattr(model, "device", x.device)
        x_dev = x.detach().to(device)
        y_dev = y.to(device).long()
        labels = target.to(device).long() if target is not None else y_dev
        n_in = x_dev.shape[0]
        state = AttackState(
            x_adv=x_dev.clone(),
            queries=torch.zeros(n_in, dtype=torch.long, device=device),
            done=torch.zeros(n_in, dtype=torch.bool, device=device),
        )
        start = time.perf_counter()
        error: str | None = None
        try:
            self._perturb(model, x_dev, labels, bounds, generator, state)
        except RemoteModelError as e:
            error = f"{type(e).__name__}: {e}"
            log.warning("%s stopped early, returning a partial result: %s", self.name, e)
        x_adv = state.x_adv.detach()
        if error is None:
            with torch.no_grad():
                adv_labels = model.predict_logits(x_adv).argmax(1).to(device)
            state.queries += 1
            success = succeeded(adv_labels, labels, targeted=self.threat.targeted)
        else:
            # keep only what provably respects the threat model; the rest reverts to the clean input
            norms = per_sample_norm(x_adv - x_dev, self.threat.norm)
            lo, hi = bounds
            tol = 1e-5 * max(1.0, self.threat.eps)
            inside = (
                (norms <= self.threat.eps + tol) & (x_adv.flatten(1).amin(1) >= lo) & (x_adv.flatten(1).amax(1) <= hi)
            )
            x_adv = torch.where(inside.view((-1,) + (1,) * (x_adv.dim() - 1)), x_adv, x_dev)
            success = state.done & inside
            adv_labels = torch.full((n_in,), -1, dtype=torch.long, device=device)
        seconds = time.perf_counter() - start
        norms = per_sample_norm(x_adv - x_dev, self.threat.norm)
        self._check_threat_model(norms, x_adv, bounds)
        return AttackResult(
            x_adv=x_adv.to(x.device).to(x.dtype),
            success=success.cpu(),
            norms=norms.cpu(),
            queries=state.queries.cpu(),
            adv_labels=adv_labels.cpu(),
            attack=self.name,
            threat=self.threat,
            params=self.params(),
            seconds=seconds,
            details=dict(state.details),
            complete=error is None,
            error=error,
        )

    def _check_threat_model(self, norms: Tensor, x_adv: Tensor, bounds: Bounds) -> None:
        tol = 1e-5 * max(1.0, self.threat.eps)
        worst = float(norms.max()) if norms.numel() else 0.0
        lo, hi = bounds
        if worst > self.threat.eps + tol or float(x_adv.min()) < lo - 1e-6 or float(x_adv.max()) > hi + 1e-6:
            raise RuntimeError(  # a Bastion bug, never a user error
                f"{self.name} left its threat model (max norm {worst:.6g} > eps {self.threat.eps:g} or out of "
                f"bounds {bounds}); please report this"
            )

    @abc.abstractmethod
    def _perturb(
        self,
        model: Any,
        x: Tensor,
        labels: Tensor,
        bounds: Bounds,
        generator: torch.Generator | None,
        state: AttackState,
    ) -> None:
        """Craft adversarial inputs for ``x`` (already on the model's device) towards/away from ``labels``."""


def check_positive_int(name: str, value: object, problems: list[str], *, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        problems.append(f"{name} must be an int >= {minimum}, got {value!r}")


def check_positive_float(name: str, value: object, problems: list[str], *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        problems.append(f"{name} must be a finite number > 0, got {value!r}")
