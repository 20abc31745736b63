from __future__ import annotations

import pytest
import torch
from torch import nn

from bastion import ConfigError, InputValidationError, ModelSpec, TorchClassifier

SPEC = ModelSpec(input_shape=(1, 4, 4), num_classes=3)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Dropout(0.5), nn.BatchNorm1d(8), nn.Linear(8, 3))


def test_logits_are_differentiable_and_count_queries() -> None:
    clf = TorchClassifier(_net(), SPEC)
    x = torch.rand(5, 1, 4, 4, requires_grad=True)
    clf.logits(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    clf.predict_logits(torch.rand(7, 1, 4, 4))
    assert clf.queries == 12


def test_eval_mode_is_used_and_the_previous_mode_restored() -> None:
    net = _net()
    net.train()
    clf = TorchClassifier(net, SPEC)
    x = torch.rand(5, 1, 4, 4)
    a, b = clf.predict_logits(x), clf.predict_logits(x)
    assert torch.equal(a, b)  # dropout off, batchnorm uses running stats
    assert net.training and all(m.training for m in net.modules())
    net.eval()
    clf.predict_logits(x)
    assert not any(m.training for m in net.modules())


def test_normalization_is_applied_inside_the_model() -> None:
    net = _net().eval()
    clf = TorchClassifier(net, SPEC, normalization=(0.5, 0.25))
    x = torch.rand(3, 1, 4, 4)
    assert torch.allclose(clf.predict_logits(x), net((x - 0.5) / 0.25))


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (torch.rand(2, 16), "must have shape (N, 1, 4, 4)"),
        (torch.ones(2, 1, 4, 4, dtype=torch.int64), "floating dtype"),
        (torch.full((2, 1, 4, 4), float("nan")), "NaN or infinite"),
        ([[0.0]], "must be a torch.Tensor"),
    ],
)
def test_bad_inputs_are_rejected_with_a_clear_message(x: object, message: str) -> None:
    clf = TorchClassifier(_net(), SPEC)
    with pytest.raises(InputValidationError) as info:
        clf.predict_logits(x)  # type: ignore[arg-type]
    assert message in str(info.value)


def test_bad_construction() -> None:
    with pytest.raises(ConfigError, match=r"nn\.Module"):
        TorchClassifier(object(), SPEC)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="std must be > 0"):
        TorchClassifier(_net(), SPEC, normalization=(0.0, 0.0))
    with pytest.raises(ConfigError, match="needs 1 or 1 values"):
        TorchClassifier(_net(), SPEC, normalization=([0.1, 0.2], 1.0))


def test_model_spec_validation() -> None:
    with pytest.raises(ConfigError) as info:
        ModelSpec(input_shape=(0, 3), num_classes=1, bounds=(1.0, 0.0))
    msg = str(info.value)
    assert "input_shape" in msg and "num_classes" in msg and "bounds" in msg


def test_large_batches_are_chunked_without_changing_results_or_gradients() -> None:
    net = _net().eval()
    whole = TorchClassifier(net, SPEC, max_batch=None)
    chunked = TorchClassifier(net, SPEC, max_batch=4)
    x = torch.rand(10, 1, 4, 4)
    assert torch.allclose(whole.predict_logits(x), chunked.predict_logits(x), atol=1e-6)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    whole.logits(xa).sum().backward()
    chunked.logits(xb).sum().backward()
    assert xa.grad is not None and xb.grad is not None and torch.allclose(xa.grad, xb.grad, atol=1e-6)
    with pytest.raises(ConfigError, match="max_batch"):
        TorchClassifier(net, SPEC, max_batch=0)
