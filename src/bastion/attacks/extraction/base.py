"""Model extraction through a query API: what the attacker's copy agrees with, against the queries it cost.

:func:`extract` runs one query strategy (registered in :data:`EXTRACTION_STRATEGIES`: ``knockoff-random``,
``knockoff-adaptive``, ``jacobian``) against any Classifier — a local model, an HTTP endpoint, a Bastion gateway —
in rounds ending at ``checkpoints`` (numbers of queries). After each round a fresh substitute is trained on every
answer so far and measured on held-out inputs: **fidelity** (agreement with the victim's labels, what a copy is
for) and **accuracy** (against the true labels). The curve says how fast an output policy gives the model away.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor

from bastion._progress import NullProgress, Progress
from bastion._registry import Registry
from bastion._torch import make_generator
from bastion._validate import label_problems, raise_if, tensor_problems
from bastion.attacks.extraction.answers import Knowledge, Targets, query
from bastion.attacks.extraction.substitute import SubstituteRecipe, train_substitute
from bastion.errors import ConfigError
from bastion.models.base import predict_labels
from bastion.models.torch import TorchClassifier


@dataclass
class StrategyState:
    """What a strategy may look at: the attacker's pool of unlabelled inputs (or seeds), which of them were used,
    every input queried so far with its targets, and the current substitute (None before the first round)."""

    pool: Tensor
    used: Tensor  # (pool,) bool
    queried: Tensor
    targets: Targets | None
    substitute: TorchClassifier | None
    bounds: tuple[float, float]
    round: int = 0


class QueryStrategy(Protocol):
    """Chooses the next ``n`` inputs to send to the victim."""

    @property
    def name(self) -> str: ...

    @property
    def paper(self) -> str: ...

    def pool_needed(self, distinct: int) -> int:
        """How many pool inputs a run of ``distinct`` distinct queries needs."""
        ...

    def select(self, state: StrategyState, n: int, generator: torch.Generator) -> Tensor: ...


EXTRACTION_STRATEGIES: Registry[QueryStrategy] = Registry("extraction strategy")


@dataclass(frozen=True)
class ExtractionPoint:
    """The substitute after ``queries`` inputs were sent to the victim."""

    queries: int
    fidelity: float
    accuracy: float | None
    seconds: float


@dataclass(frozen=True)
class ExtractionResult:
    strategy: str
    release: str
    repeats: int
    curve: tuple[ExtractionPoint, ...]
    substitute: TorchClassifier
    victim_queries: int
    evaluated_on: int
    notes: tuple[str, ...] = field(default=())

    @property
    def final(self) -> ExtractionPoint:
        return self.curve[-1]

    def to_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "release": self.release,
            "repeats": self.repeats,
            "curve": [
                {"queries": p.queries, "fidelity": p.fidelity, "accuracy": p.accuracy, "seconds": p.seconds}
                for p in self.curve
            ],
            "victim_queries": self.victim_queries,
            "evaluated_on": self.evaluated_on,
            "notes": list(self.notes),
        }


def default_checkpoints(budget: int) -> list[int]:
    """Four rounds ending at an eighth, a quarter, a half and all of the budget (fewer for tiny budgets)."""
    return sorted({max(1, budget // 8), max(1, budget // 4), max(1, budget // 2), budget})


def extract(
    victim: Any,
    pool: Tensor,
    *,
    budget: int,
    strategy: str = "knockoff-random",
    checkpoints: list[int] | None = None,
    knowledge: Knowledge | None = None,
    recipe: SubstituteRecipe | None = None,
    eval_x: Tensor,
    eval_y: Tensor | None = None,
    reference: Any = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> ExtractionResult:
    """Steal ``victim`` with at most ``budget`` queries (each repeat of an input counts) chosen by ``strategy``
    from the attacker's ``pool`` of unlabelled inputs; measure the substitute at every checkpoint on ``eval_x``
    against ``reference``'s labels (default: the victim's, asked once before the attack and not counted in the
    budget) and against ``eval_y`` when given."""
    spec = victim.spec
    knowledge = knowledge or Knowledge()
    recipe = recipe or SubstituteRecipe()
    chosen = EXTRACTION_STRATEGIES.get(strategy)
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ConfigError(f"budget must be an int >= 1 (queries to the victim), got {budget!r}")
    problems = tensor_problems(pool, name="pool", input_shape=spec.input_shape, bounds=spec.bounds)
    problems += tensor_problems(eval_x, name="eval_x", input_shape=spec.input_shape)
    if eval_y is not None:
        problems += label_problems(eval_y, name="eval_y", n=int(eval_x.shape[0]), num_classes=spec.num_classes)
    raise_if(problems, "extraction data")
    distinct = budget // knowledge.repeats
    if distinct < 1:
        raise ConfigError(f"budget {budget} is less than one input queried {knowledge.repeats} times; raise it")
    points = sorted(set(checkpoints or default_checkpoints(budget)))
    if points[0] < knowledge.repeats or points[-1] > budget:
        raise ConfigError(f"checkpoints must lie within [{knowledge.repeats}, {budget}], got {points}")
    need = chosen.pool_needed(distinct)
    if pool.shape[0] < need:
        raise ConfigError(
            f"{strategy} needs {need} pool inputs for {distinct} distinct queries but the pool has {pool.shape[0]}; "
            "give more unlabelled data or lower the budget"
        )
    progress = progress or NullProgress()
    if isinstance(reference, Tensor):
        raise_if(
            label_problems(reference, name="reference", n=int(eval_x.shape[0]), num_classes=spec.num_classes),
            "extraction data",
        )
        ref_labels = reference
    else:
        ref_labels = predict_labels(reference if reference is not None else victim, eval_x)
    gen = make_generator(seed)
    start_queries = int(getattr(victim, "queries", 0))
    state = StrategyState(pool, torch.zeros(pool.shape[0], dtype=torch.bool), pool[:0], None, None, spec.bounds)
    curve: list[ExtractionPoint] = []
    spent = 0
    progress.task(f"extraction ({strategy})", len(points))
    t0 = time.perf_counter()
    release = ""
    for i, point in enumerate(points):
        n = point // knowledge.repeats - state.queried.shape[0]
        state.round = i
        if n > 0:
            new = chosen.select(state, n, gen)
            answers = query(victim, new, knowledge)
            spent += new.shape[0] * knowledge.repeats
            state.queried = torch.cat([state.queried, new])
            state.targets = answers if state.targets is None else Targets.cat([state.targets, answers])
            release = _described(knowledge, answers)
        assert state.targets is not None
        state.substitute = train_substitute(
            spec, state.queried, state.targets, recipe, seed=seed + i, perturbation=knowledge.perturbation
        )
        pred = predict_labels(state.substitute, eval_x)
        curve.append(
            ExtractionPoint(
                spent,
                float((pred == ref_labels).float().mean()),
                float((pred == eval_y).float().mean()) if eval_y is not None else None,
                time.perf_counter() - t0,
            )
        )
        progress.advance()
    assert state.substitute is not None
    return ExtractionResult(
        strategy=strategy,
        release=release,
        repeats=knowledge.repeats,
        curve=tuple(curve),
        substitute=state.substitute,
        victim_queries=int(getattr(victim, "queries", 0)) - start_queries,
        evaluated_on=int(eval_x.shape[0]),
    )


def _described(knowledge: Knowledge, t: Targets) -> str:
    kind = t.kind
    if t.probs is not None and kind == "scores" and not t.precise:
        kind = "scores (rounded or averaged: probabilities only)"
    extra = []
    if knowledge.repeats > 1:
        extra.append(f"each input asked {knowledge.repeats} times and averaged")
    if knowledge.perturbation is not None:
        extra.append("the known perturbation modelled in the loss")
    return kind + (f"; {', '.join(extra)}" if extra else "")
