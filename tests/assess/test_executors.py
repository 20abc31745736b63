"""Executors: a real process pool gives the figures of one process; what cannot be spread is refused clearly."""

from __future__ import annotations

import json
import os
import socket

import pytest
import torch
from tests.assess.test_jobs import POLICY

from bastion.assess import parse_policy, run_assessment
from bastion.assess.executors import ProcessPool, RayCluster, executor_for
from bastion.data import Dataset
from bastion.errors import BastionError, ConfigError
from bastion.models import TorchClassifier
from bastion.models.zoo import TrainedModel


def _rows(a) -> dict[str, object]:  # type: ignore[no-untyped-def]
    return {f"{r.entry} {json.dumps(r.at, sort_keys=True)}": r.metrics for r in a.rows}


def test_a_process_pool_gives_the_figures_of_one_process(digits_model: TrainedModel, digits: Dataset) -> None:
    policy = parse_policy(POLICY)
    m = digits_model.classifier
    whole = run_assessment(m, digits.x_test, digits.y_test, policy)
    pooled = run_assessment(m, digits.x_test, digits.y_test, policy, executor=ProcessPool(2))
    assert _rows(pooled) == _rows(whole)
    assert [e.x_adv.tolist() for e in pooled.examples] == [e.x_adv.tolist() for e in whole.examples]
    assert pooled.extra["distributed"]["executor"] == "process pool" and pooled.extra["distributed"]["jobs"] > 4


class _Unpicklable(torch.nn.Module):
    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.hook = lambda x: x  # a lambda cannot be pickled

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


def test_a_model_that_cannot_travel_is_refused_before_any_work(digits_model: TrainedModel, digits: Dataset) -> None:
    spec = digits_model.classifier.spec
    model = TorchClassifier(_Unpicklable(digits_model.module), spec)
    with pytest.raises(ConfigError, match="cannot be sent to other processes"):
        run_assessment(model, digits.x_test, digits.y_test, parse_policy(POLICY), executor=ProcessPool(2))


def test_bad_executor_settings_get_one_clear_error() -> None:
    with pytest.raises(ConfigError, match="--workers must be >= 1"):
        executor_for(0, None)
    with pytest.raises(ConfigError, match="not host:port"):
        RayCluster("somewhere")
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConfigError, match="cannot reach the Ray cluster"):
        RayCluster(f"127.0.0.1:{port}")
    assert executor_for(None, None) is None


class _DiesInWorker(torch.nn.Module):
    """The digits CNN, except that a pool worker running it dies at once (what the kernel's OOM killer does)."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.parent = os.getpid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if os.getpid() != self.parent:
            os._exit(9)
        return self.inner(x)


def test_a_worker_that_dies_fails_the_run_in_one_clear_error(digits_model: TrainedModel, digits: Dataset) -> None:
    model = TorchClassifier(_DiesInWorker(digits_model.module), digits_model.classifier.spec)
    with pytest.raises(BastionError, match="a worker process died") as err:
        run_assessment(model, digits.x_test, digits.y_test, parse_policy(POLICY), executor=ProcessPool(2))
    assert "rerun with fewer --workers" in str(err.value) and "Traceback" not in str(err.value)
