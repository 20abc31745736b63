"""Screen: the detectors in front of one model, run as one step."""

from __future__ import annotations

import copy

import pytest
import torch

from bastion.data import Dataset
from bastion.detectors.input import Reconstruction
from bastion.detectors.screen import Screen
from bastion.errors import ConfigError, InputValidationError
from bastion.models.zoo import TrainedModel


def test_an_unfitted_detector_is_refused_and_no_detectors_flag_nothing() -> None:
    with pytest.raises(ConfigError, match="not fitted"):
        Screen((Reconstruction(),))
    assert Screen.flagged(()).numel() == 0 and len(Screen(())) == 0


def test_flags_are_each_detectors_verdict_and_their_union(digits: Dataset) -> None:
    det = Reconstruction().fit(digits.x_train)
    screen = Screen((det,))
    noise = torch.rand(20, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    (verdict,) = screen(torch.cat([digits.x_test[:20], noise]))
    assert verdict.detector == "reconstruction" and verdict.fpr == det.fpr
    assert torch.equal(verdict.flagged, verdict.scores > det.threshold_)
    assert float(verdict.flagged[20:].float().mean()) >= 0.9 and float(verdict.flagged[:20].float().mean()) <= 0.3
    assert torch.equal(Screen.flagged((verdict,)), verdict.flagged)


def test_the_fused_graph_gives_the_separate_calls_answers_in_one_onnxruntime_call(
    digits: Dataset, digits_model: TrainedModel
) -> None:
    """compile_inference: the model on the input and its squeezed copies, the Mahalanobis features and the
    autoencoder as one graph; probabilities, scores, flags and query counts as on the eager path."""
    from bastion.defenses.ensemble import Ensemble
    from bastion.defenses.preprocessing.squeeze import BitDepth, MedianFilter
    from bastion.detectors.input import FeatureSqueezing, Mahalanobis

    member = copy.deepcopy(digits_model.classifier)
    model = Ensemble([member])
    squeeze = FeatureSqueezing(model=model, squeezers=(BitDepth(2), MedianFilter(2)))
    dets = (
        squeeze.fit(digits.x_train),
        Mahalanobis(model=member).fit(digits.x_train, digits.y_train),
        Reconstruction(epochs=2).fit(digits.x_train),
    )
    screen = Screen(dets)
    x = torch.cat([digits.x_test[:30], torch.rand(10, 1, 8, 8, generator=torch.Generator().manual_seed(1))])
    want, want_det = screen.predict(model, x)
    queries = model.queries
    assert screen.compile_inference(model, threads=1)
    got, got_det = screen.predict(model, x)
    assert model.queries == queries + 3 * 40  # the input and its two squeezed copies counted, as before
    assert torch.allclose(got.probs, want.probs, atol=1e-5)
    for a, b in zip(want_det, got_det, strict=True):
        assert a.detector == b.detector and torch.allclose(a.scores, b.scores, atol=1e-4, rtol=1e-4)
        assert torch.equal(b.flagged, b.scores > next(d for d in dets if d.name == b.detector).threshold_)
    with pytest.raises(InputValidationError, match="shape"):  # still validated, once
        screen.predict(model, torch.rand(2, 1, 9, 9))
    two = Ensemble([member, copy.deepcopy(member)])  # an ensemble is not fused: it keeps the separate calls
    assert not screen.compile_inference(two, threads=1)
    assert screen._fused is None  # a failed compile leaves no stale graph behind


class _Pooled(torch.nn.Module):
    """A rider ONNX cannot export (adaptive pooling to a size that does not divide 8)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.adaptive_avg_pool2d(x, 3).flatten(1)


def test_riders_ride_in_the_one_graph_and_one_that_does_not_export_is_left_out(
    digits: Dataset, digits_model: TrainedModel
) -> None:
    """Riders (the monitors' feature networks) come back from the same graph call with the model's answer, equal to
    their own output; one that does not export keeps its own call and the rest still fuse; with no detectors at all
    the riders alone are worth a graph."""
    from bastion.defenses.ensemble import Ensemble
    from bastion.monitors._distance import Projected

    member = copy.deepcopy(digits_model.classifier)
    model = Ensemble([member])
    screen = Screen((Reconstruction(epochs=2).fit(digits.x_train),))
    riders = {"projected": Projected(64, 16).eval(), "pooled": _Pooled().eval()}
    assert screen.compile_inference(model, threads=1, riders=riders)
    x = digits.x_test[:7]
    out, det, got = screen.predict_with_riders(model, x)
    assert set(got) == {"projected"}
    assert torch.allclose(got["projected"], riders["projected"](x), atol=1e-5)
    want, want_det = screen._predict_eager(model, x)
    assert torch.allclose(out.probs, want.probs, atol=1e-5)
    assert torch.allclose(det[0].scores, want_det[0].scores, atol=1e-4)
    bare = Screen(())
    assert bare.compile_inference(model, threads=1, riders={"projected": riders["projected"]})
    out, det, got = bare.predict_with_riders(model, x)
    assert det == () and torch.allclose(out.probs, want.probs, atol=1e-5)
    assert torch.allclose(got["projected"], riders["projected"](x), atol=1e-5)
    assert Screen(()).predict_with_riders(model, x)[2] == {}  # not compiled: the caller runs them itself
