"""Fingerprints: a fixed, portable function (pinned by test vectors), robust to what a replaying attacker does to
an adversarial input, and far apart for distinct natural inputs."""

from __future__ import annotations

import pytest
import torch

from bastion import Norm, ThreatModel
from bastion.attacks import Square
from bastion.data import Dataset, load_dataset
from bastion.errors import InputValidationError
from bastion.models.zoo import TrainedModel
from bastion.monitors.fingerprint import FingerprintScheme, distances, from_hex, pack, sign_of, to_hex
from bastion.monitors.similarity import Blinding


def test_test_vectors_pin_the_scheme() -> None:
    """Another team's Bastion must compute the same fingerprints: a change here breaks every shared bundle (bump
    the scheme's name instead)."""
    image = FingerprintScheme((1, 8, 8), 256, margin=1)
    x = torch.linspace(0, 1, 64).reshape(1, 1, 8, 8) ** 2
    assert image.fingerprints(x) == ["593538b9a1f67953b05a7a9a4a5a1ac36aaa6e1bac0f2a78da0188300bdae2b3"]
    rows = FingerprintScheme((3,), 64, center=(0.0, 1.0, 2.0), scale=(1.0, 2.0, 4.0))
    assert rows.fingerprints(torch.tensor([[1.0, 0.0, 3.0]])) == ["30b5094ce9b89533"]


def test_hex_round_trip_and_scheme_serialisation(digits: Dataset) -> None:
    s = FingerprintScheme.for_inputs((1, 8, 8), digits.x_train.flatten(1))
    signs = s.signs(digits.x_test[:5])
    assert torch.equal(torch.stack([from_hex(to_hex(v)) for v in signs]), signs)
    assert FingerprintScheme.from_dict(s.to_dict()) == s and s.margin == 1
    rows = load_dataset("breast-cancer")
    t = FingerprintScheme.for_inputs((rows.x_train.shape[1],), rows.x_train)
    assert FingerprintScheme.from_dict(t.to_dict()).key == t.key and len(t.center or ()) == rows.x_train.shape[1]


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"scheme": "other"}, "unknown fingerprint scheme"),
        ({"scheme": "bastion-simhash-1", "shape": [1, 8, 8], "bits": 100}, "bits must be one of"),
        ({"scheme": "bastion-simhash-1", "shape": [1, 8, 8], "margin": 4}, "margin"),
        ({"scheme": "bastion-simhash-1", "shape": [3], "center": [0, 0, 0]}, "center and scale"),
        ({"scheme": "bastion-simhash-1", "shape": [2], "center": [0, 0], "scale": [1, -1]}, "positive"),
        ({"scheme": "bastion-simhash-1", "shape": [1, 8, 8], "evil": 1}, "unknown fields"),
        ({"scheme": "bastion-simhash-1", "shape": "1,8,8"}, "list of 1-3 integers"),
        ({"scheme": "bastion-simhash-1", "shape": [3, 4096, 4096]}, "at most"),
    ],
)
def test_malformed_schemes_are_refused_with_the_reason(given: dict[str, object], message: str) -> None:
    with pytest.raises(InputValidationError, match=message):
        FingerprintScheme.from_dict(given)


def test_replayed_adversarial_examples_match_and_distinct_digits_do_not(
    digits_model: TrainedModel, digits: Dataset
) -> None:
    """Square's adversarial examples (Linf 0.1) stay within the default radius (16 of 256 bits) of the attack's own
    queries after fresh noise, a 1 px shift and brightness/contrast jitter; no two distinct digits of the data set
    come that close."""
    scheme = FingerprintScheme.for_inputs((1, 8, 8), digits.x_train.flatten(1))
    x, y = digits.x_test[:24], digits.y_test[:24]
    g = torch.Generator().manual_seed(0)
    adv = Square(ThreatModel(Norm.LINF, 0.1), max_queries=200).run(digits_model.classifier, x, y, generator=g).x_adv
    blinded = Blinding(noise=0.05, shift=1, brightness=0.1, contrast=0.2, sign=0.0).apply(adv, (0.0, 1.0), g)
    known = scheme.signs(adv)
    d = distances(scheme.signs(blinded, all_offsets=True), known).diagonal()
    assert float((d <= 16).float().mean()) >= 0.9, d.tolist()
    natural = torch.cat([digits.x_train, digits.x_test[24:]])
    nat = distances(scheme.signs(natural, all_offsets=True), scheme.signs(x)).float()
    assert int((nat <= 16).sum()) <= 1  # at most one near-duplicate pair among 24 x ~1,770
    assert float(nat.median()) > 80


def test_the_folded_map_equals_the_step_by_step_definition(digits: Dataset) -> None:
    """signs() folds crop, pooling, centring and projection into one matrix; it must give the definition's signs."""
    fmnist = load_dataset("fashion-mnist")
    for scheme, x in (
        (FingerprintScheme.for_inputs((1, 8, 8), digits.x_train.flatten(1)), digits.x_test),
        (FingerprintScheme((1, 28, 28), margin=2), fmnist.x_test[:500]),
    ):
        for all_offsets in (False, True):
            fast = torch.cat([scheme.signs(x[i : i + 50], all_offsets=all_offsets) for i in range(0, len(x), 50)])
            slow = sign_of(scheme.projections(x, all_offsets=all_offsets))
            assert fast.shape == slow.shape and float((fast == slow).float().mean()) > 0.9999
            assert torch.equal(scheme.packed(x, all_offsets=all_offsets), pack(fast))
    big = FingerprintScheme((3, 64, 64), margin=2)  # 3 x 64 x 64 x 25 x 256 is over the folding limit
    x = torch.rand(2, 3 * 64 * 64)
    assert torch.equal(big.signs(x, all_offsets=True), sign_of(big.projections(x, all_offsets=True)))
