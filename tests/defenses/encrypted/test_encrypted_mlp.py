"""The polynomial MLP: trained with a square activation it runs encrypted with the plaintext's labels; a ReLU MLP
converts to a fitted quadratic; other models are refused with the layer named."""

from __future__ import annotations

import pytest
import torch

from bastion.defenses.encrypted import EncryptedClient, EncryptedMLPServer, PolyActivation, convert_mlp
from bastion.errors import ConfigError, InputValidationError


def _train(net: torch.nn.Module, digits, steps: int = 200) -> torch.nn.Module:
    torch.manual_seed(0)
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(digits.x_train), digits.y_train).backward()
        opt.step()
    return net.eval()


@pytest.fixture(scope="module")
def square_mlp(digits) -> torch.nn.Module:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16), PolyActivation(), torch.nn.Linear(16, 10))
    return _train(net, digits)


def test_a_square_activation_mlp_runs_encrypted_with_the_plaintext_labels(square_mlp, digits) -> None:
    weights = convert_mlp(square_mlp)
    with torch.no_grad():
        assert torch.allclose(weights.plaintext(digits.x_test).float(), square_mlp(digits.x_test), atol=1e-4)
    client = EncryptedClient(64, 10, depth=4)
    x = digits.x_test[:120]
    queries = client.encrypt(x)
    assert {q.regime for q in queries} == {"batch"}  # deeper models never use the single packing
    server = EncryptedMLPServer(weights)
    for q in queries:
        server.register(client.public_context(q))
    out = client.decrypt(queries, [server.evaluate(q) for q in queries])
    plain = weights.plaintext(x)
    assert torch.equal(out.argmax(1), plain.argmax(1))
    assert float((out - plain).abs().max()) < 0.1
    assert "depth 4" in client.parameters("batch", 120).explanation


def test_a_relu_mlp_converts_to_a_fitted_quadratic(digits) -> None:
    torch.manual_seed(0)
    net = _train(
        torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10)),
        digits,
    )
    w = convert_mlp(net, digits.x_train)
    a, _, _ = w.poly
    assert a > 0  # a quadratic opening upwards, as ReLU's least-squares fit is
    poly_acc = float((w.plaintext(digits.x_test).argmax(1) == digits.y_test).float().mean())
    assert poly_acc > 0.95  # measured 0.969 against the ReLU original's 0.972
    with pytest.raises(ConfigError, match="needs the data"):
        convert_mlp(net)


def test_models_that_cannot_be_converted_are_refused_naming_the_layer(digits_model) -> None:
    with pytest.raises(ConfigError, match="Linear -> activation -> Linear"):
        convert_mlp(digits_model.classifier.module)
    deep = torch.nn.Sequential(
        torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2)
    )
    with pytest.raises(ConfigError, match="one hidden layer"):
        convert_mlp(deep)
    with pytest.raises(ConfigError, match="GELU has no polynomial form"):
        convert_mlp(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.GELU(), torch.nn.Linear(4, 2)))


@pytest.mark.parametrize("act", [torch.nn.Sigmoid, torch.nn.Tanh])
def test_sigmoid_and_tanh_are_fitted_on_their_input_range(act, digits) -> None:
    torch.manual_seed(0)
    net = _train(
        torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16), act(), torch.nn.Linear(16, 10)), digits
    )
    w = convert_mlp(net, digits.x_train)
    with torch.no_grad():
        original = net(digits.x_test).argmax(1)
    agree = float((w.plaintext(digits.x_test).argmax(1) == original).float().mean())
    assert agree > 0.95  # measured 0.972 (sigmoid) and 0.975 (tanh): the quadratic keeps nearly every decision


def test_the_mlp_refuses_the_single_packing(square_mlp, digits) -> None:
    weights = convert_mlp(square_mlp)
    single = EncryptedClient(64, 10, single_max=4)
    (q,) = single.encrypt(digits.x_test[:1])
    server = EncryptedMLPServer(weights)
    server.register(single.public_context(q))
    with pytest.raises(InputValidationError, match="batch packing only"):
        server.evaluate(q)
