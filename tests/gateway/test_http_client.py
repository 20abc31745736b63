"""Bastion's HttpClassifier against Bastion's gateway: top-k answers are read, too-large batches are split."""

from __future__ import annotations

from collections.abc import Callable

import torch
from tests.gateway.conftest import Env, running

from bastion import HttpClassifier
from bastion.data import Dataset


def test_batches_the_gateway_refuses_as_too_large_are_halved_and_resent(
    make_env: Callable[..., Env], digits: Dataset
) -> None:
    env = make_env(limits={"max_batch": 8})
    x = digits.x_test[:150]  # several client-side batches of 64, the first of which is refused and split
    with running(env.gateway) as url:
        remote = HttpClassifier(f"{url}/v1/models/digits/predict", digits.spec, api_key=env.scores, max_batch=64)
        probs = remote.predict_logits(x).exp()
    local = torch.softmax(env.gateway.models["digits"].members[0].predict_logits(x), 1)
    assert torch.allclose(probs, local, atol=1e-5) and remote.max_batch <= 8


def test_top_k_answers_become_sparse_scores(make_env: Callable[..., Env], digits: Dataset) -> None:
    env = make_env(levels={"normal": {"postprocess": [{"name": "top_k", "k": 3}]}})
    x = digits.x_test[:6]
    with running(env.gateway) as url:
        remote = HttpClassifier(f"{url}/v1/models/digits/predict", digits.spec, api_key=env.scores)
        scores = remote.predict_logits(x).exp()
    assert remote.last_output_kind == "top_k"
    local = torch.softmax(env.gateway.models["digits"].members[0].predict_logits(x), 1)
    top = local.topk(3, dim=1)
    assert torch.allclose(scores.gather(1, top.indices), top.values, atol=1e-5)
    assert bool(((scores > 1e-6).sum(1) == 3).all())


def test_a_short_rate_limit_wait_is_honoured_and_a_refusal_is_not_counted(
    make_env: Callable[..., Env], digits: Dataset
) -> None:
    import pytest

    from bastion.errors import RemoteModelError

    env = make_env(rate={"requests_per_second": 2, "inputs_per_minute": 1000, "inputs_per_day": 1000})
    with running(env.gateway) as url:
        patient = HttpClassifier(f"{url}/v1/models/digits/predict", digits.spec, api_key=env.scores)
        for i in range(4):  # 4 requests at 2 per second: at least one 429 with Retry-After, then success
            patient.predict_logits(digits.x_test[i : i + 1])
        assert patient.queries == 4 and patient.requests > 4
        impatient = HttpClassifier(
            f"{url}/v1/models/digits/predict", digits.spec, api_key=env.labels, rate_limit_retries=0
        )
        with pytest.raises(RemoteModelError, match="429"):
            for i in range(4):
                impatient.predict_logits(digits.x_test[i : i + 1])
        assert impatient.queries == 2  # the refused request never reached the model
