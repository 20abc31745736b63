"""Knockoff Nets: steal a model with natural inputs it was never meant to label for you.

Orekondy, Schiele & Fritz, "Knockoff Nets: Stealing Functionality of Black-Box Models", CVPR 2019. The attacker
holds unlabelled natural data (here: any pool the user gives, e.g. images of the same kind) and sends them to the
victim. ``knockoff-random`` sends them in random order. ``knockoff-adaptive`` spends each later round where the
current substitute is least sure: three quarters of a round are the unqueried pool inputs with the smallest margin
between the substitute's two most likely classes, one quarter random so the rounds keep covering the pool (the
paper's adaptive policy is a bandit over a label hierarchy of a large public dataset; with one unlabelled pool,
uncertainty sampling is the same idea: spend queries where they teach the most).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from bastion._torch import batch_slices
from bastion.attacks.extraction.base import EXTRACTION_STRATEGIES, StrategyState

_PAPER = "Orekondy, Schiele & Fritz, CVPR 2019"


def _take(state: StrategyState, picked: Tensor) -> Tensor:
    state.used[picked] = True
    return state.pool[picked]


@dataclass(frozen=True)
class KnockoffRandom:
    name: str = "knockoff-random"
    paper: str = _PAPER

    def pool_needed(self, distinct: int) -> int:
        return distinct

    def select(self, state: StrategyState, n: int, generator: torch.Generator) -> Tensor:
        free = (~state.used).nonzero().squeeze(1)
        return _take(state, free[torch.randperm(free.shape[0], generator=generator)[:n]])


@dataclass(frozen=True)
class KnockoffAdaptive:
    name: str = "knockoff-adaptive"
    paper: str = _PAPER

    def pool_needed(self, distinct: int) -> int:
        return distinct

    uncertain_share: float = 0.75

    def select(self, state: StrategyState, n: int, generator: torch.Generator) -> Tensor:
        free = (~state.used).nonzero().squeeze(1)
        if state.substitute is None:
            return _take(state, free[torch.randperm(free.shape[0], generator=generator)[:n]])
        with torch.no_grad():
            margins = []
            for s in batch_slices(free.shape[0], 1024):
                p = torch.softmax(state.substitute.predict_logits(state.pool[free[s]]), 1)
                top = p.topk(2, dim=1).values
                margins.append(top[:, 0] - top[:, 1])
        margin = torch.cat(margins)
        k = min(n, round(n * self.uncertain_share))
        unsure = margin.argsort()[:k]
        rest = torch.ones(free.shape[0], dtype=torch.bool)
        rest[unsure] = False
        others = rest.nonzero().squeeze(1)
        extra = others[torch.randperm(others.shape[0], generator=generator)[: n - k]]
        return _take(state, free[torch.cat([unsure, extra])])


EXTRACTION_STRATEGIES.add("knockoff-random", KnockoffRandom())
EXTRACTION_STRATEGIES.add("knockoff-adaptive", KnockoffAdaptive())
