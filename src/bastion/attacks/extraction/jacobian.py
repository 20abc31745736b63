"""Jacobian-based dataset augmentation: steal a model from a handful of seeds and synthetic queries.

Papernot, McDaniel, Goodfellow, Jha, Celik & Swami, "Practical Black-Box Attacks against Machine Learning",
AsiaCCS 2017. The attacker labels a few natural seeds, trains a substitute, and makes each round's queries by
stepping inputs it already asked about along the sign of the substitute's gradient for the class the victim gave
them (``lam`` of the value range a step; the step's sign flips every ``flip_every`` rounds, as in the paper, so the
points do not all run off the data), then asks the victim about them. The first round sends only the ``seeds``
(fewer than the round's budget when the budget is larger), so the strategy needs a pool of just that many natural
inputs. Such synthetic streams are what the gateway's extraction monitor (PRADA) looks for.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from bastion.attacks.extraction.base import EXTRACTION_STRATEGIES, StrategyState


@dataclass(frozen=True)
class Jacobian:
    name: str = "jacobian"
    paper: str = "Papernot et al., AsiaCCS 2017"
    seeds: int = 100
    lam: float = 0.1
    flip_every: int = 3

    def pool_needed(self, distinct: int) -> int:
        return min(self.seeds, distinct)

    def select(self, state: StrategyState, n: int, generator: torch.Generator) -> Tensor:
        if state.substitute is None or state.targets is None:
            free = (~state.used).nonzero().squeeze(1)
            picked = free[torch.randperm(free.shape[0], generator=generator)[: min(n, self.seeds)]]
            state.used[picked] = True
            return state.pool[picked]
        have = state.queried.shape[0]
        idx = torch.randperm(have, generator=generator).repeat(n // have + 1)[:n]
        base = state.queried[idx].clone().requires_grad_(True)
        labels = state.targets.labels[idx]
        (g,) = torch.autograd.grad(state.substitute.logits(base).gather(1, labels[:, None]).sum(), base)
        sign = -1.0 if (state.round // self.flip_every) % 2 else 1.0
        lo, hi = state.bounds
        return (base.detach() + sign * self.lam * (hi - lo) * g.sign()).clamp(lo, hi)


EXTRACTION_STRATEGIES.add("jacobian", Jacobian())
