"""What an extraction attacker learns from an answer, given what the endpoint releases and what it knows of it.

An endpoint may release logits, probabilities, rounded probabilities, the top k, probabilities with noise or with a
deceptive perturbation (reverse sigmoid), or labels only. The attacker turns each answer into training targets:

* ``labels``: the top-1 class only (every release has it);
* ``probs``: a probability vector (logits through softmax; released scores renormalised; a top-k vector has zeros
  outside its k classes), or None for labels only;
* ``precise``: whether ``log(probs)`` can be trusted to full precision (logits and unrounded scores): the substitute
  then also matches centred log-probabilities, the "dark knowledge" in the small probabilities that a
  cross-entropy on probabilities nearly ignores (ART's KnockoffNets treats logits as probabilities, which is why it
  collapses when a victim returns logits).

An attacker who knows the release policy does better than one who does not: noisy answers are averaged over
``repeats`` queries of the same input (each counted against the budget), and a known deterministic perturbation
(reverse sigmoid) is applied to the substitute's own probabilities inside the loss, so the substitute learns the
function *before* the perturbation instead of the perturbed one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from bastion._torch import batch_slices
from bastion.errors import ConfigError

ReleaseKind = Literal["auto", "logits", "scores", "labels"]


@dataclass(frozen=True)
class Knowledge:
    """What the attacker assumes about the answers: their ``kind`` (``auto``: what an HTTP endpoint says it
    returned, logits for a local model), how many times each input is queried and averaged (``repeats``, against
    noise), and a known deterministic ``perturbation`` of the released probabilities to model inside the loss."""

    kind: ReleaseKind = "auto"
    repeats: int = 1
    perturbation: Callable[[Tensor], Tensor] | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("auto", "logits", "scores", "labels"):
            raise ConfigError(f"release kind must be auto, logits, scores or labels, got {self.kind!r}")
        if isinstance(self.repeats, bool) or not isinstance(self.repeats, int) or self.repeats < 1:
            raise ConfigError(f"repeats must be an int >= 1, got {self.repeats!r}")


@dataclass(frozen=True)
class Targets:
    """Training targets for a batch of queries."""

    labels: Tensor
    probs: Tensor | None
    precise: bool
    kind: str = "labels"  # what the answers were read as: logits, scores, top_k or labels

    @staticmethod
    def cat(parts: list[Targets]) -> Targets:
        probs = [p.probs for p in parts]
        return Targets(
            torch.cat([p.labels for p in parts]),
            torch.cat(probs) if all(p is not None for p in probs) else None,  # type: ignore[arg-type]
            all(p.precise for p in parts),
            parts[-1].kind,
        )


def _kind(victim: object, knowledge: Knowledge) -> str:
    if knowledge.kind != "auto":
        return knowledge.kind
    said = getattr(victim, "last_output_kind", None)
    if said is None:
        return "logits" if not hasattr(victim, "last_output_kind") else "scores"
    return {"logits": "logits", "scores": "scores", "top_k": "top_k", "labels": "labels"}.get(str(said), "scores")


def query(victim: object, x: Tensor, knowledge: Knowledge, *, batch_size: int = 256) -> Targets:
    """Ask ``victim`` about ``x`` (``knowledge.repeats`` times each) and decode the answers into targets."""
    outs = []
    for _ in range(knowledge.repeats):
        with torch.no_grad():
            outs.append(
                torch.cat([victim.predict_logits(x[s]).double().cpu() for s in batch_slices(x.shape[0], batch_size)])  # type: ignore[attr-defined]
            )
    kind = _kind(victim, knowledge)
    if kind == "labels":
        return Targets(torch.stack(outs).mean(0).argmax(1), None, False, "labels")
    probs = torch.stack([torch.softmax(o, 1) for o in outs]).mean(0)
    if kind == "top_k":  # an HTTP client fills the classes it was not told with log(1e-12)
        probs = probs * (probs > 1e-9)
        probs = probs / probs.sum(1, keepdim=True)
    precise = kind == "logits" or (kind == "scores" and knowledge.repeats == 1 and _unrounded(probs))
    return Targets(probs.argmax(1), probs.float(), precise, kind)


def _unrounded(probs: Tensor) -> bool:
    """False when the scores take few distinct values (a rounding release, renormalised by the client): the logs of
    rounded scores are noise. Values at the client's floor for a missing or zero score are left out, so a confident
    model's tiny probabilities are not mistaken for rounding."""
    v = probs[probs > 1e-9].double()
    # compared in log space, so a confident model's many tiny probabilities stay distinct; the renormalisation's
    # float noise is far below the 1e-4 resolution
    distinct = int((v.log() * 1e4).round().unique().numel())
    return distinct > max(20, v.numel() // 4)
