"""onnxruntime for gradient-free inference: the same outputs as PyTorch (features of tapped layers included),
PyTorch kept for anything that does not export, and taps that never read another thread's forward pass."""

from __future__ import annotations

import copy
import logging
import threading

import pytest
import torch
from torch import Tensor, nn

from bastion.models.features import FeatureTap
from bastion.models.runtime import compile_module
from bastion.models.torch import TorchClassifier
from bastion.models.zoo.nets import build
from bastion.types import ModelSpec

SPEC = ModelSpec(input_shape=(1, 28, 28), num_classes=10)


def _classifier() -> TorchClassifier:
    torch.manual_seed(0)
    return TorchClassifier(build("fmnist-cnn", (1, 28, 28), 10), SPEC, normalization=(0.3, 0.2))


def test_compiled_predictions_and_tapped_features_equal_pytorchs() -> None:
    clf = _classifier()
    tap = FeatureTap(clf)
    x = torch.rand(37, 1, 28, 28)
    with tap.capture() as got:
        expected = clf.predict_logits(x)
    features = torch.cat(got)
    assert clf.compile_inference([tap.target], threads=1)
    before = clf.queries
    with tap.capture() as got:
        logits = clf.predict_logits(x)
    assert clf.queries == before + 37
    assert torch.allclose(logits, expected, atol=1e-5)
    assert torch.allclose(torch.cat(got), features, atol=1e-5)
    x.requires_grad_(True)  # gradients still come from PyTorch
    (grad,) = torch.autograd.grad(clf.logits(x).sum(), x)
    assert grad.abs().sum() > 0
    copied = copy.deepcopy(clf)  # the session is rebuilt from the exported graph
    assert copied._compiled is not None and torch.allclose(copied.predict_logits(x.detach()), expected, atol=1e-5)


def test_a_tap_on_a_layer_that_was_not_exported_falls_back_to_pytorch() -> None:
    clf = _classifier()
    assert clf.compile_inference(threads=1)  # no taps exported
    tap = FeatureTap(clf)
    x = torch.rand(4, 1, 28, 28)
    with tap.capture() as got:
        clf.predict_logits(x)
    assert len(got) == 1 and got[0].shape == (4, 128)  # read by PyTorch's hook, not lost


class _Unexportable(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        n = int(x.flatten(1).sum(1).argmax().item())  # data-dependent Python control flow
        return x.flatten(1)[:, :10] * (n + 1)


def test_a_module_that_does_not_export_stays_on_pytorch_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    clf = TorchClassifier(_Unexportable(), SPEC)
    x = torch.rand(5, 1, 28, 28)
    with caplog.at_level(logging.WARNING, logger="bastion.models.runtime"):
        compiled = clf.compile_inference(threads=1)
    assert not compiled and clf._compiled is None
    assert any("stays on PyTorch" in r.message for r in caplog.records)
    assert torch.equal(clf.predict_logits(x), _Unexportable()(x))
    with pytest.raises(ValueError, match="eval mode"):
        compile_module(nn.Linear(2, 2).train(), torch.zeros(1, 2))


@pytest.mark.parametrize("compiled", [False, True])
def test_concurrent_taps_read_only_their_own_threads_features(compiled: bool) -> None:
    clf = _classifier()
    tap = FeatureTap(clf)
    if compiled:
        assert clf.compile_inference([tap.target], threads=1)
    inputs = [torch.full((2, 1, 28, 28), v) for v in (0.1, 0.9)]
    with tap.capture() as got:
        clf.predict_logits(torch.cat(inputs))
    expected = torch.cat(got)
    wrong: list[str] = []

    def worker(i: int) -> None:
        for _ in range(40):
            with tap.capture() as mine:
                clf.predict_logits(inputs[i])
            if len(mine) != 1 or not torch.allclose(mine[0], expected[2 * i : 2 * i + 2], atol=1e-4):
                wrong.append(f"thread {i} read {len(mine)} batches")

    threads = [threading.Thread(target=worker, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not wrong, wrong[:3]


def test_the_similarity_encoder_and_the_autoencoder_compile_for_28x28_images() -> None:
    from bastion.detectors.input import Reconstruction
    from bastion.monitors.similarity import SimilarityEncoder, _network

    torch.manual_seed(0)
    x = torch.rand(9, 1, 28, 28)
    enc = SimilarityEncoder(_network((1, 28, 28), 64), (1, 28, 28), (0.0, 1.0))
    expected = enc.embed(x)
    assert enc.compile_inference(threads=1)
    assert torch.allclose(enc.embed(x), expected, atol=1e-5)
    det = Reconstruction(epochs=1).fit(torch.rand(200, 1, 28, 28))
    scores = det.score(x)
    assert det.compile_inference(threads=1)
    assert torch.allclose(det.score(x), scores, atol=1e-5)
