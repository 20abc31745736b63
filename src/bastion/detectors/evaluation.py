"""How well a detector catches adversarial examples, naive and adaptive, measured the same way for every detector.

Naive: the examples of an attack that ignores the detector (FGSM, PGD, C&W, Square). Adaptive: the examples of
:class:`~bastion.attacks.evasion.detector_aware.DetectorAwarePGD`, which attacks model and detector together
(Tramèr et al. 2020), per input the best of those and of every naive attack's (an attacker who knows the detector
has the naive attacks too, so the adaptive figure is never better for the defender than a naive one). Both are
reported as

- ``detection_rate``: of the adversarial examples that fool the model, the share the detector flags;
- ``evasion_rate``: of the attacked inputs (those the model classifies correctly), the share that end up fooling
  the model *and* passing the detector: what the attacker actually gets through.

A detector's figure is only meaningful beside its adaptive one; :class:`DetectorRates` always carries both (or says
why the adaptive attack could not run).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from bastion._torch import batch_slices
from bastion.attacks.base import Attack
from bastion.attacks.evasion.detector_aware import DetectorAwarePGD
from bastion.detectors.base import FittedThreshold
from bastion.errors import NoGradientError
from bastion.types import ThreatModel


@dataclass(frozen=True)
class Rate:
    """One attack against one detector: counts over the attacked inputs."""

    attack: str
    adaptive: bool
    attacked: int  # inputs attacked (classified correctly when clean)
    fooled: int  # adversarial examples that fool the model
    detected: int  # of those, flagged by the detector

    @property
    def detection_rate(self) -> float:
        return self.detected / self.fooled if self.fooled else float("nan")

    @property
    def evaded(self) -> int:
        return self.fooled - self.detected

    @property
    def evasion_rate(self) -> float:
        return self.evaded / self.attacked if self.attacked else float("nan")


@dataclass(frozen=True)
class DetectorRates:
    """A detector's clean false-positive rate and its rates on naive attacks and on the adaptive one."""

    detector: str
    fpr: float  # the rate its threshold was set at
    clean_flagged: int
    clean_n: int
    naive: tuple[Rate, ...]
    adaptive: Rate | None
    adaptive_note: str = ""  # why the adaptive attack did not run

    @property
    def clean_fpr(self) -> float:
        return self.clean_flagged / self.clean_n if self.clean_n else float("nan")


@dataclass(frozen=True)
class NaiveExamples:
    """One naive attack's examples over the attacked inputs, computed once and scored by every detector."""

    attack: str
    x_adv: Tensor
    fooled: Tensor


def _labels(model: object, x: Tensor) -> Tensor:
    with torch.no_grad():
        return torch.cat([model.predict_logits(x[s]).argmax(1) for s in batch_slices(x.shape[0], 512)])  # type: ignore[attr-defined]


def naive_examples(
    model: object, x: Tensor, y: Tensor, attacks: Mapping[str, Attack], generator: torch.Generator | None = None
) -> list[NaiveExamples]:
    """Run each attack on (x, y) — inputs the model classifies correctly — and keep what fooled the model (judged
    by the model's own predictions, not the attack's report)."""
    out = []
    for name, attack in attacks.items():
        x_adv = attack.run(model, x, y, generator=generator).x_adv  # type: ignore[arg-type]
        out.append(NaiveExamples(name, x_adv, _labels(model, x_adv) != y))
    return out


def _flagged(detector: FittedThreshold, x: Tensor) -> Tensor:
    return torch.cat([detector.predict(x[s]) for s in batch_slices(x.shape[0], 512)])


def evaluate_detector(
    detector: FittedThreshold,
    model: object,
    x: Tensor,
    y: Tensor,
    naive: list[NaiveExamples],
    threat: ThreatModel,
    *,
    adaptive_steps: int = 50,
    generator: torch.Generator | None = None,
) -> DetectorRates:
    """Rates of a fitted detector on clean ``x`` and on each naive attack's examples, and on the detector-aware PGD
    at ``threat``; (x, y) are the attacked inputs (classified correctly), ``naive`` their naive examples."""
    n = int(x.shape[0])
    clean = _flagged(detector, x)
    rates = []
    for ex in naive:
        flagged = _flagged(detector, ex.x_adv)
        rates.append(Rate(ex.attack, False, n, int(ex.fooled.sum()), int((ex.fooled & flagged).sum())))
    adaptive, note = None, ""
    if not callable(getattr(model, "logits", None)):
        return DetectorRates(
            detector.name,
            detector.fpr,
            int(clean.sum()),
            n,
            tuple(rates),
            None,
            "not measured: the adaptive attack needs the model's gradients (a torch model); judge this detector "
            "by a gradient-free adaptive attack before relying on it",
        )
    try:
        res = DetectorAwarePGD(threat, detector, steps=adaptive_steps).run(model, x, y, generator=generator)
    except NoGradientError as e:
        note = f"not measured: {e}"
    else:
        # judged afresh (model and detector as deployed), not by what the attack believes; an attacker who knows
        # the detector also has the naive attacks, so per input the best of all counts (hidden beats fooled)
        fooled = _labels(model, res.x_adv) != y
        hidden = fooled & ~_flagged(detector, res.x_adv)
        for ex in naive:
            hidden |= ex.fooled & ~_flagged(detector, ex.x_adv)
            fooled |= ex.fooled
        adaptive = Rate("detector-aware-pgd", True, n, int(fooled.sum()), int((fooled & ~hidden).sum()))
    return DetectorRates(detector.name, detector.fpr, int(clean.sum()), n, tuple(rates), adaptive, note)
