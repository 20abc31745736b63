"""One contract over every registered membership attack: one finite score per candidate, independent of the
candidates' order, its own name, and a clear error when the reference models it needs are missing."""

from __future__ import annotations

import pytest
import torch

from bastion._torch import make_generator
from bastion.attacks.inference import MEMBERSHIP_ATTACKS
from bastion.attacks.inference.membership import Signals
from bastion.attacks.inference.reference import balanced_keep
from bastion.errors import ConfigError


def _signals(perm: torch.Tensor | None = None) -> Signals:
    g = torch.Generator().manual_seed(0)
    n, k, c = 40, 8, 5
    labels = torch.randint(0, c, (n,), generator=g)
    target = torch.randn(n, c, generator=g, dtype=torch.float64) * 3
    refs = torch.randn(k, n, c, generator=g, dtype=torch.float64) * 3
    keep = balanced_keep(k, n, make_generator(1))
    if perm is not None:
        labels, target, refs, keep = labels[perm], target[perm], refs[:, perm], keep[:, perm]
    return Signals(labels=labels, target=target, references=refs, keep=keep)


@pytest.mark.parametrize("name", MEMBERSHIP_ATTACKS.names())
def test_membership_attack_contract(name: str) -> None:
    attack = MEMBERSHIP_ATTACKS.get(name)
    assert attack.name == name and attack.paper and attack.description
    scores = attack.score(_signals())
    assert scores.shape == (40,) and bool(torch.isfinite(scores).all())
    assert scores.unique().numel() > 20  # it separates candidates, it does not answer a constant
    perm = torch.randperm(40, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(attack.score(_signals(perm)), scores[perm])
    if attack.references:
        bare = _signals()
        with pytest.raises(ConfigError, match="reference"):
            attack.score(Signals(labels=bare.labels, target=bare.target))
    else:
        assert not attack.online
