"""One contract over every registered extraction strategy: inputs of the model's shape within its bounds, no pool
input sent twice, the same choice from the same generator, and a pool need that the budget check can trust."""

from __future__ import annotations

import pytest
import torch

from bastion.attacks.extraction import EXTRACTION_STRATEGIES, Knowledge, SubstituteRecipe, query, train_substitute
from bastion.attacks.extraction.base import StrategyState
from bastion.data import Dataset
from bastion.models.zoo import TrainedModel


def _state(digits: Dataset) -> StrategyState:
    pool = digits.x_train[:200]
    return StrategyState(pool, torch.zeros(200, dtype=torch.bool), pool[:0], None, None, (0.0, 1.0))


@pytest.mark.parametrize("name", EXTRACTION_STRATEGIES.names())
def test_extraction_strategy_contract(name: str, digits_model: TrainedModel, digits: Dataset) -> None:
    strategy = EXTRACTION_STRATEGIES.get(name)
    assert strategy.name == name and strategy.paper
    assert 1 <= strategy.pool_needed(50) <= 50
    picks = []
    for _ in range(2):
        state = _state(digits)
        first = strategy.select(state, 50, torch.Generator().manual_seed(0))
        assert 1 <= first.shape[0] <= 50 and first.shape[1:] == digits.x_train.shape[1:]
        assert int(state.used.sum()) <= strategy.pool_needed(50)
        state.queried = first
        state.targets = query(digits_model.classifier, first, Knowledge())
        state.substitute = train_substitute(digits.spec, first, state.targets, SubstituteRecipe(epochs=2, min_steps=10))
        state.round = 1
        second = strategy.select(state, 40, torch.Generator().manual_seed(1))
        assert second.shape[0] == 40 and bool((second >= 0).all() and (second <= 1).all())
        if strategy.pool_needed(10_000) == 10_000:  # pool strategies never send a pool input twice
            assert int(state.used.sum()) == first.shape[0] + 40
        picks.append(torch.cat([first, second]))
    assert torch.equal(picks[0], picks[1])
