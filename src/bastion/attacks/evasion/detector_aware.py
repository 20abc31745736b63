"""PGD against a model *and* the detector in front of it: the adaptive attack a detector must be judged by.

A detector evaluated only on attacks that ignore it says little: Carlini & Wagner (2017, "Adversarial examples are
not easily detected") and Tramèr, Carlini, Brendel & Mądry (NeurIPS 2020, "On adaptive attacks to adversarial
example defenses") broke most published detectors by attacking model and detector together. This attack maximises

    min(margin(model(x'), y), kappa)  -  c * score(x') / threshold

by projected gradient ascent in the eps-ball: the misclassification margin (capped at ``kappa``, so once the label
has flipped the steps go to hiding) against the detector's score, through the detector's ``score_with_grad``
(exact for differentiable detectors, BPDA for feature squeezing). It tries each weight ``c`` in turn, cheapest
first, keeping every input that is misclassified *and* scored below the threshold as soon as it is found.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from bastion.attacks._losses import margin
from bastion.attacks._projection import normalize_step, project, random_start
from bastion.detectors.base import FittedThreshold
from bastion.errors import ConfigError, NoGradientError
from bastion.types import Norm, ThreatModel


@dataclass(frozen=True)
class DetectorAwareResult:
    """``x_adv`` (N, *shape); ``fooled``: misclassified; ``hidden``: fooled and under the detector's threshold."""

    x_adv: Tensor
    fooled: Tensor
    hidden: Tensor


@dataclass(frozen=True)
class DetectorAwarePGD:
    """See the module docstring. ``weights``: the detector-loss weights ``c`` tried, in order; ``steps`` per weight."""

    threat: ThreatModel
    detector: FittedThreshold
    steps: int = 50
    weights: tuple[float, ...] = (0.1, 1.0, 10.0)
    kappa: float = 2.0
    step_size: float | None = None

    def __post_init__(self) -> None:
        problems = []
        if self.threat.targeted:
            problems.append("the detector-aware attack is untargeted")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            problems.append(f"steps must be an int >= 1, got {self.steps!r}")
        if not self.weights or any(not w > 0 for w in self.weights):
            problems.append(f"weights must be positive, got {self.weights}")
        if problems:
            raise ConfigError("invalid detector-aware PGD settings", problems=problems)

    def run(
        self, model: object, x: Tensor, y: Tensor, *, generator: torch.Generator | None = None
    ) -> DetectorAwareResult:
        logits_fn = getattr(model, "logits", None)
        if logits_fn is None:
            raise NoGradientError("the detector-aware attack needs a differentiable model (a TorchClassifier)")
        bounds = self.threat.bounds or model.spec.bounds  # type: ignore[attr-defined]
        eps, norm = self.threat.eps, self.threat.norm
        alpha = self.step_size if self.step_size is not None else 2.5 * eps / self.steps
        thr = float(self.detector.threshold_)
        scale = abs(thr) if thr != 0 else 1.0
        x_out = x.clone()
        hidden = torch.zeros(x.shape[0], dtype=torch.bool)
        fooled = torch.zeros(x.shape[0], dtype=torch.bool)
        for c in self.weights:
            idx = (~hidden).nonzero().flatten()
            if idx.numel() == 0:
                break
            x0, lab = x[idx], y[idx]
            xa = random_start(x0, eps, norm, bounds, generator)
            for _ in range(self.steps + 1):
                xa.requires_grad_(True)
                logits = logits_fn(xa)
                score = self.detector.score_with_grad(xa)
                wrong = logits.detach().argmax(1) != lab
                ok = wrong & (score.detach() <= thr)
                # remember the best so far: hidden beats merely fooled
                if bool(ok.any()):
                    x_out[idx[ok]] = xa.detach()[ok]
                    hidden[idx[ok]] = True
                fresh = wrong & ~fooled[idx] & ~ok
                if bool(fresh.any()):
                    x_out[idx[fresh]] = xa.detach()[fresh]
                fooled[idx[wrong]] = True
                keep = ~ok
                if not bool(keep.any()):
                    break
                objective = margin(logits, lab, targeted=False).clamp(max=self.kappa) - c * score / scale
                (grad,) = torch.autograd.grad(objective[keep].sum(), xa)
                with torch.no_grad():
                    idx, x0, lab = idx[keep], x0[keep], lab[keep]
                    xa = project(xa.detach()[keep] + alpha * normalize_step(grad[keep], norm), x0, eps, norm, bounds)
        if norm is Norm.LINF:  # the template's guarantee for every attack: nothing leaves the ball or the bounds
            assert float((x_out - x).abs().max()) <= eps + 1e-5
        return DetectorAwareResult(x_out, fooled, hidden)
