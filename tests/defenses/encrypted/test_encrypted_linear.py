"""Encrypted inference of linear models: the same labels as plaintext in both packings, a server that never holds
the secret key, and clear refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bastion.data import load_dataset
from bastion.defenses.encrypted import (
    EncryptedClient,
    EncryptedLinearServer,
    EncryptedQuery,
    LinearWeights,
    choose_parameters,
    linear_weights,
)
from bastion.errors import ConfigError, InputValidationError


def _roundtrip(client: EncryptedClient, server: EncryptedLinearServer, x: torch.Tensor) -> tuple[torch.Tensor, list]:
    queries = client.encrypt(x)
    for q in queries:
        server.register(client.public_context(q))
    return client.decrypt(queries, [server.evaluate(q) for q in queries]), queries


@pytest.fixture(scope="module")
def cancer_lr() -> tuple[LinearWeights, object]:
    from sklearn.linear_model import LogisticRegression

    data = load_dataset("breast-cancer")
    est = LogisticRegression(max_iter=2000).fit(data.x_train.numpy(), data.y_train.numpy())
    return linear_weights(est, data.spec.input_shape), data


def test_breast_cancer_logistic_regression_gives_the_plaintext_labels_in_both_packings(cancer_lr) -> None:
    weights, data = cancer_lr
    server = EncryptedLinearServer(weights)
    client = EncryptedClient(weights.n_features, weights.n_outputs, single_max=4)
    logits, queries = _roundtrip(client, server, data.x_test)
    assert {q.regime for q in queries} == {"batch"}
    plain = weights.plaintext(data.x_test)
    assert torch.equal(logits.argmax(1), plain.argmax(1))
    assert float((logits - plain).abs().max()) < 1e-3
    few, fq = _roundtrip(client, server, data.x_test[:3])
    assert {q.regime for q in fq} == {"single"} and len(fq) == 3
    assert torch.equal(few.argmax(1), plain[:3].argmax(1)) and float((few - plain[:3]).abs().max()) < 1e-3


def test_a_torch_linear_model_is_read_by_probing_and_a_cnn_is_refused(digits, digits_model) -> None:
    from bastion.models import TorchClassifier

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    clf = TorchClassifier(net, digits.spec)
    weights = linear_weights(clf, digits.spec.input_shape)
    assert np.allclose(weights.weight, net[1].weight.detach().double().numpy(), atol=1e-5)
    logits, _ = _roundtrip(EncryptedClient(64, 10, single_max=2), EncryptedLinearServer(weights), digits.x_test[:2])
    with torch.no_grad():
        assert torch.allclose(logits.float(), net(digits.x_test[:2]), atol=1e-3)
    with pytest.raises(ConfigError, match="not linear in its input"):
        linear_weights(digits_model.classifier, digits.spec.input_shape)


def test_the_server_never_holds_the_secret_key(cancer_lr) -> None:
    import tenseal as ts

    weights, data = cancer_lr
    client = EncryptedClient(weights.n_features, weights.n_outputs, single_max=0)
    server = EncryptedLinearServer(weights)
    (query,) = client.encrypt(data.x_test[:8])
    cid = server.register(client.public_context(query))
    held = server._contexts[cid].context
    assert not held.is_private() and not held.has_secret_key()
    with pytest.raises(ValueError, match="secret_key"):
        ts.ckks_vector_from(held, query.ciphertexts[0]).decrypt()
    secret = client._contexts[("batch", 4096)].secret
    with pytest.raises(InputValidationError, match="holds a secret key"):
        server.register(secret.serialize(save_secret_key=True))


def test_bad_queries_are_refused_with_the_reason(cancer_lr) -> None:
    weights, data = cancer_lr
    client = EncryptedClient(weights.n_features, weights.n_outputs, single_max=0)
    server = EncryptedLinearServer(weights, max_query_bytes=10_000_000)
    (query,) = client.encrypt(data.x_test[:8])
    with pytest.raises(InputValidationError, match="is not registered"):
        server.evaluate(query)
    cid = server.register(client.public_context(query))
    other = EncryptedClient(weights.n_features, weights.n_outputs, single_max=0)
    (big,) = other.encrypt(torch.rand(3000, weights.n_features))  # another context: N=8192, not 4096
    alien = EncryptedQuery("batch", cid, 8, big.ciphertexts[: weights.n_features])
    with pytest.raises(InputValidationError, match="not a ciphertext of the registered context"):
        server.evaluate(alien)
    with pytest.raises(InputValidationError, match="one ciphertext per feature"):
        server.evaluate(EncryptedQuery("batch", cid, 8, query.ciphertexts[:-1]))
    with pytest.raises(InputValidationError, match="must hold 9 inputs"):
        server.evaluate(EncryptedQuery("batch", cid, 9, query.ciphertexts))
    small = EncryptedLinearServer(weights, max_query_bytes=1000)
    small.register(client.public_context(query))
    with pytest.raises(InputValidationError, match="the limit is 1,000"):
        small.evaluate(query)
    with pytest.raises(InputValidationError, match="values each"):
        client.encrypt(torch.rand(2, 5))
    with pytest.raises(InputValidationError, match="NaN"):
        client.encrypt(torch.full((2, weights.n_features), float("nan")))
    with pytest.raises(InputValidationError, match="could not be read"):
        server.register(b"not a context")


def test_parameters_follow_the_he_standard() -> None:
    p = choose_parameters(2, 4096)
    assert p.poly_modulus_degree == 8192 and p.total_bits <= 218 and len(p.coeff_mod_bit_sizes) == 4
    assert "HE standard" in p.explanation and "N=4096 has 2048 slots" in p.explanation
    assert choose_parameters(1, 2048, rescale=False).poly_modulus_degree == 4096
    assert choose_parameters(3, 64, security=256).total_bits <= 237
    with pytest.raises(ConfigError, match="use a shallower model"):
        choose_parameters(40, 4096)
    with pytest.raises(ConfigError, match="security must be"):
        choose_parameters(1, 8, security=100)


def test_a_context_too_small_for_the_models_logits_is_refused_not_wrapped(cancer_lr) -> None:
    """Logits beyond the context's headroom would wrap around the modulus and decrypt to nonsense with no error:
    the server refuses such a context at registration, naming the integer bits it needs."""
    weights, data = cancer_lr
    big = LinearWeights(weights.weight * 1e4, weights.bias * 1e4)
    server = EncryptedLinearServer(big, bounds=(float(data.x_test.min()), float(data.x_test.max())))
    small = EncryptedClient(big.n_features, big.n_outputs, single_max=0)
    (q,) = small.encrypt(data.x_test[:8])
    with pytest.raises(InputValidationError, match="would wrap around silently"):
        server.register(small.public_context(q))
    assert server.integer_bits is not None and server.integer_bits > 10
