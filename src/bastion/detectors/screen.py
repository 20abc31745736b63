"""A served model's input detectors run as one step: every detector's scores and flags for a batch of inputs.

Compiled for a model, the step is one onnxruntime graph: the model, every detector, and any *riders* — other
networks of the request path that read the same inputs (the monitors' features: the probing monitor's similarity
encoder, the fingerprint and PRADA projections) — so a request pays one graph call, not one per network."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from bastion._validate import raise_if, tensor_problems
from bastion.defenses.ensemble import Ensemble, EnsembleOutput
from bastion.detectors.base import FittedThreshold
from bastion.detectors.input import FeatureSqueezing, Mahalanobis
from bastion.errors import ConfigError
from bastion.monitors.base import Detection

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Screen:
    """Fitted detectors in front of one model. ``__call__`` scores a batch with each and returns their verdicts
    (``bastion.monitors.Detection``) in order; ``flagged`` is the union over detectors."""

    detectors: tuple[FittedThreshold, ...]
    _fused: _Compiled | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        unfitted = [d.name for d in self.detectors if d.input_shape is None]
        if unfitted:
            raise ConfigError(f"detector(s) {unfitted} are not fitted: fit them on clean inputs first")

    def __call__(self, x: Tensor) -> tuple[Detection, ...]:
        out = []
        with torch.no_grad():
            for d in self.detectors:
                s = d.score(x).float()
                out.append(Detection(d.name, s, s > d.threshold_, d.fpr))
        return tuple(out)

    def predict(self, model: Ensemble, x: Tensor) -> tuple[EnsembleOutput, tuple[Detection, ...]]:
        """The model's output on ``x`` and every detector's verdict in one forward pass where the detectors allow:
        the squeezed copies ride in the same batch as ``x``, and Mahalanobis reads its features from that pass.
        Equal (up to float rounding) to ``model.predict(x)`` and ``self(x)``; about one model call per request
        instead of three on the gateway's path. After :meth:`compile_inference` for ``model``, all of it is one
        onnxruntime call."""
        out, detections, _ = self.predict_with_riders(model, x)
        return out, detections

    def compiled_for(self, model: Ensemble) -> bool:
        """Whether :meth:`predict` runs as one compiled graph for ``model``."""
        return self._fused is not None and self._fused.model is model

    def predict_with_riders(
        self, model: Ensemble, x: Tensor
    ) -> tuple[EnsembleOutput, tuple[Detection, ...], dict[str, Tensor]]:
        """As :meth:`predict`, and the outputs of the riders compiled in with the model (by name; see
        :meth:`compile_inference`), from the same graph call. Empty when the graph is not compiled for ``model``:
        the caller then runs the riders' own functions."""
        if self._fused is not None and self._fused.model is model:
            return self._predict_fused(model, x, self._fused)
        out, detections = self._predict_eager(model, x)
        return out, detections, {}

    def _predict_eager(self, model: Ensemble, x: Tensor) -> tuple[EnsembleOutput, tuple[Detection, ...]]:
        if not self.detectors:
            return model.predict(x), ()
        n = int(x.shape[0])
        squeezing, tapped = self._riders(model)
        extra = [d.squeezed(x) for d in squeezing]
        for checked in (*squeezing, *tapped):  # the others check x in their own score()
            checked._check(x)
        batch = torch.cat([x, *extra]) if extra else x
        with torch.no_grad(), ExitStack() as stack:
            taps = [stack.enter_context(d.tap.capture()) for d in tapped]
            out = model.predict(batch)
        with torch.no_grad():
            scores = self._scores(
                squeezing, tapped, n, out.probs, extra, [torch.cat(got) for got in taps], lambda d: d.score(x)
            )
        detections = [
            Detection(d.name, s, s > d.threshold_, d.fpr) for d, s in zip(self.detectors, scores, strict=True)
        ]
        return EnsembleOutput(out.probs[:n], out.disagreement[:n]), tuple(detections)

    def _riders(self, model: Ensemble) -> tuple[list[FeatureSqueezing], list[Mahalanobis]]:
        """The detectors that ride in the model's own pass: feature squeezing (its squeezed copies join the batch)
        and Mahalanobis on one of the model's members (it reads a layer of that pass)."""
        members = {id(m) for m in model.members}
        return (
            [d for d in self.detectors if isinstance(d, FeatureSqueezing) and d.model is model],
            [d for d in self.detectors if isinstance(d, Mahalanobis) and id(d.model) in members],
        )

    def _scores(
        self,
        squeezing: list[FeatureSqueezing],
        tapped: list[Mahalanobis],
        n: int,
        probs_all: Tensor,
        extra: list[Tensor],
        features: list[Tensor],
        rest: Callable[[FittedThreshold], Tensor],
    ) -> list[Tensor]:
        """Every detector's (N,) scores, in the screen's order, from one pass over the N inputs followed by the
        squeezed copies ``extra`` (``probs_all``) and the tapped layers' ``features``; ``rest`` scores the others.
        Shared by the eager path and the exported graph, so the two compute the same thing."""
        probs = probs_all[:n]
        scores: dict[int, Tensor] = {}
        offset = n
        for sq, e in zip(squeezing, extra, strict=True):
            scores[id(sq)] = sq.score_probs(probs, probs_all[offset : offset + e.shape[0]])
            offset = offset + e.shape[0]
        for ma, f in zip(tapped, features, strict=True):
            scores[id(ma)] = ma.score_features(f[:n])
        return [(scores[id(d)] if id(d) in scores else rest(d)).float() for d in self.detectors]

    def _predict_fused(
        self, model: Ensemble, x: Tensor, fused: _Compiled
    ) -> tuple[EnsembleOutput, tuple[Detection, ...], dict[str, Tensor]]:
        raise_if(tensor_problems(x, name="x", input_shape=model.spec.input_shape), "model input")
        n, k, d = int(x.shape[0]), model.spec.num_classes, len(self.detectors)
        out = fused.graph(x)[0]
        queried = n * fused.batch_factor  # the model saw the input and its squeezed copies, as on the eager path
        model.queries += queried
        model.members[0].queries += queried
        probs, scores = out[:, :k], out[:, k : k + d].T  # (D, N): one row per detector
        flagged = scores > fused.thresholds
        detections = tuple(Detection(d.name, scores[i], flagged[i], d.fpr) for i, d in enumerate(self.detectors))
        riders, start = {}, k + d
        for name, width in fused.riders:
            riders[name] = out[:, start : start + width]
            start += width
        return EnsembleOutput(probs, torch.zeros(n)), detections, riders

    def compile_inference(
        self,
        model: Ensemble,
        *,
        threads: int | None = None,
        atol: float = 1e-4,
        riders: Mapping[str, nn.Module] | None = None,
    ) -> bool:
        """Run :meth:`predict` for ``model`` as one onnxruntime graph: the model on the input and its squeezed
        copies, the features Mahalanobis reads, and every other detector's :meth:`~FittedThreshold.traceable_score`
        (measured on the gateway's path: about 0.9 ms a request in many small PyTorch calls and three onnxruntime
        sessions, against one session). ``riders`` are more traceable modules from the inputs (N, *input_shape) to
        features (N, F) that the same graph computes (:meth:`predict_with_riders` returns them). Only a single
        PyTorch model on the CPU qualifies. The graph is checked against the eager path (and each rider against
        itself) on examples; False (the eager path kept, the reason logged) when it does not export or does not
        match."""
        from bastion._torch import eval_mode
        from bastion.models.runtime import compile_module, example_inputs
        from bastion.models.torch import TorchClassifier

        object.__setattr__(self, "_fused", None)
        member = model.members[0]
        if len(model.members) != 1 or not isinstance(member, TorchClassifier) or member.device.type != "cpu":
            return False
        example = example_inputs(model.spec.input_shape, model.spec.bounds)
        riders = dict(riders or {})
        with torch.no_grad():
            want_riders = {}
            for name, r in riders.items():
                with eval_mode(r):
                    want_riders[name] = [r(s).float() for s in (example, example[:1])]
        if any(
            w.dim() != 2 or w.shape[0] != s.shape[0]
            for ws in want_riders.values()
            for w, s in zip(ws, (example, example[:1]), strict=True)
        ):
            raise ConfigError("a screen rider must map inputs (N, *input_shape) to features (N, F)")
        graph, factor = self._export(model, member, example, riders, threads)
        if graph is None and riders:  # a rider that does not export keeps its own call; the rest still fuse
            exporting = {}
            for name, r in riders.items():
                with eval_mode(r):
                    if compile_module(r, example, threads=threads, what=f"{name} features") is not None:
                        exporting[name] = r
            if len(exporting) < len(riders):
                riders = exporting
                want_riders = {name: want_riders[name] for name in riders}
                graph, factor = self._export(model, member, example, riders, threads)
        if graph is None:
            return False
        compiled = _Compiled(
            model,
            graph,
            factor,
            torch.tensor([[d.threshold_] for d in self.detectors]).reshape(-1, 1),
            tuple((name, int(w[0].shape[1])) for name, w in want_riders.items()),
        )
        queries = (model.queries, member.queries)
        try:
            for i, sample in enumerate((example, example[:1])):
                want, want_det = self._predict_eager(model, sample)
                got, got_det, got_riders = self._predict_fused(model, sample, compiled)
                pairs = [(want.probs, got.probs)] + [
                    (a.scores, b.scores) for a, b in zip(want_det, got_det, strict=True)
                ]
                pairs += [(want_riders[name][i], got_riders[name]) for name in riders]
                for what, (a, b) in zip(["probabilities", *self.names, *riders], pairs, strict=True):
                    if a.shape != b.shape or not torch.allclose(a, b, atol=atol, rtol=1e-3):
                        log.warning("the screen stays on separate calls: the fused graph's %s differ", what)
                        return False
        finally:
            model.queries, member.queries = queries
        object.__setattr__(self, "_fused", compiled)
        return True

    def _export(
        self, model: Ensemble, member: Any, example: Tensor, riders: Mapping[str, nn.Module], threads: int | None
    ) -> tuple[Any, int]:
        """The fused graph of ``model``, this screen and ``riders`` in onnxruntime, or None (logged), and how many
        model inputs one input makes."""
        from bastion._torch import eval_mode
        from bastion.models.runtime import compile_module

        fused = _Fused(self, model, member, riders)
        with eval_mode(fused):
            return compile_module(fused, example, threads=threads, what="screen"), fused.batch_factor

    @staticmethod
    def flagged(detections: Sequence[Detection]) -> Tensor:
        """(N,) bool: inputs that any detector flagged (empty detections: none)."""
        if not detections:
            return torch.zeros(0, dtype=torch.bool)
        return torch.stack([d.flagged for d in detections]).any(0)

    def __len__(self) -> int:
        return len(self.detectors)

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.detectors]


@dataclass(frozen=True)
class _Compiled:
    """A screen compiled for one model: the onnxruntime graph of :class:`_Fused`, how many model inputs one input
    makes (itself and its squeezed copies) and the detectors' thresholds as a (D, 1) column."""

    model: Ensemble
    graph: Any
    batch_factor: int
    thresholds: Tensor
    riders: tuple[tuple[str, int], ...] = ()  # name and width of each rider's columns, after the detectors'


class _Fused(nn.Module):
    """:meth:`Screen.predict` for one PyTorch model as a traceable module: returns (N, K + D + F), the model's
    probabilities on the inputs, then each detector's score, in the screen's order, then the riders' features."""

    def __init__(self, screen: Screen, model: Ensemble, member: Any, riders: Mapping[str, nn.Module]) -> None:
        super().__init__()
        self.riders = nn.ModuleList(riders.values())
        self.module = member.module  # registered, so the export sees its parameters (and their memory format)
        self.parts = nn.ModuleList(  # the detectors' own networks (an autoencoder), likewise
            [v for d in screen.detectors for v in vars(d).values() if isinstance(v, nn.Module) and v is not self.module]
        )
        self.member, self.screen = member, screen
        self.squeezing, self.tapped = screen._riders(model)
        self.batch_factor = 1 + sum(len(d.squeezed(torch.zeros(1, *model.spec.input_shape))) for d in self.squeezing)

    def forward(self, x: Tensor) -> Tensor:
        extra = [d.squeezed(x) for d in self.squeezing]
        batch = torch.cat([x, *extra]) if extra else x
        got: list[Tensor] = []
        handles = [
            d.tap.target.register_forward_pre_hook(lambda _m, a: got.append(a[0].flatten(1))) for d in self.tapped
        ]
        try:
            probs_all = torch.softmax(self.module(self.member.prepare(batch)).float(), 1)
        finally:
            for h in handles:
                h.remove()
        n = x.shape[0]
        cols = self.screen._scores(
            self.squeezing, self.tapped, n, probs_all, extra, got, lambda d: d.traceable_score(x)
        )
        parts = [probs_all[:n], *(c[:, None] for c in cols), *(r(x).float() for r in self.riders)]
        return torch.cat(parts, 1)
