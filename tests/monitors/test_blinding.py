"""Probing detection against attackers who know it is there: query blinding, attacks split over keys."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from bastion import Norm, SimBA, Square, ThreatModel
from bastion.data import Dataset
from bastion.models.zoo import TrainedModel
from bastion.monitors import MONITORS, QueryEvent
from bastion.monitors.query_patterns import ProbingMonitor, ProbingSettings
from bastion.monitors.similarity import EncoderSettings, cache_dir, encoder_for


def blind(x: torch.Tensor, g: torch.Generator, sigma: float = 0.1, shift: int = 0) -> torch.Tensor:
    """The attacker's blinding, per query: contrast x0.8-1.2, brightness +-0.1, a shift of up to ``shift`` pixels
    (wrapping), Gaussian noise ``sigma``. No shift on the 8x8 digits: one pixel is an eighth of the image and the
    model's answer changes with it, so the attack ends at once (bench/gateway.py shifts Fashion-MNIST by 2 px)."""
    n = x.shape[0]
    x = x * (0.8 + 0.4 * torch.rand(n, 1, 1, 1, generator=g)) + (torch.rand(n, 1, 1, 1, generator=g) * 0.2 - 0.1)
    dy, dx = (int(v) for v in torch.randint(-shift, shift + 1, (2,), generator=g))
    x = torch.roll(x, (dy, dx), (2, 3))
    return (x + sigma * torch.randn(x.shape, generator=g)).clamp(0, 1)


class Attacker:
    """A classifier the attack queries: each query is blinded, sent under one of ``keys`` in turn and watched."""

    def __init__(
        self, model: TrainedModel, monitor: ProbingMonitor, keys: list[str], blinding: bool = True, sigma: float = 0.1
    ) -> None:
        self.model, self.spec, self.monitor, self.keys = model.classifier, model.classifier.spec, monitor, keys
        self.sigma = sigma
        self.g, self.blinding, self.queries, self.turn = torch.Generator().manual_seed(3), blinding, 0, 0
        self.flagged: dict[str, int] = {}
        self.shared: set[str] = set()  # keys flagged by the service-wide index

    def predict_logits(self, x: torch.Tensor) -> torch.Tensor:
        xb = blind(x, self.g, self.sigma) if self.blinding else x
        key = self.keys[self.turn % len(self.keys)]
        self.turn += 1
        self.queries += len(x)
        logits = self.model.predict_logits(xb)
        for a in self.monitor.observe(QueryEvent(key, "m", 0.0, xb.flatten(1), logits, logits.argmax(1))):
            assert a.kind == "probing" and a.key_id is not None
            self.flagged.setdefault(a.key_id, self.queries)
            if a.evidence.get("shared"):
                self.shared.add(a.key_id)
        return logits


@pytest.fixture(scope="module")
def probing(digits: Dataset) -> ProbingMonitor:
    """The gateway's probing monitor for the digits model, as the registry builds it (encoder included)."""
    return MONITORS.get("probing").build(ProbingSettings(), digits.x_train, torch.empty(0))  # type: ignore[return-value]


def _simba(attacker: Attacker, digits: Dataset, images: int = 6) -> None:
    attack = SimBA(ThreatModel(Norm.LINF, 0.1), max_queries=150, basis="pixel")
    for j in range(images):
        attack.run(
            attacker, digits.x_test[j : j + 1], digits.y_test[j : j + 1], generator=torch.Generator().manual_seed(j)
        )


def test_blinded_simba_is_flagged_within_500_queries(
    probing: ProbingMonitor, digits_model: TrainedModel, digits: Dataset
) -> None:
    """Noise sigma 0.1 with brightness/contrast jitter on every query. (On 8x8 digits the input-space detector
    happens to catch this stream too; on Fashion-MNIST it does not — bench/gateway.py measures both.)"""
    robust = Attacker(digits_model, copy.deepcopy(probing), ["k"])
    _simba(robust, digits)
    assert robust.queries > 500 and robust.flagged.get("k", 10**9) <= 500, robust.flagged


def test_unblinded_attack_is_still_flagged_within_200_queries(
    probing: ProbingMonitor, digits_model: TrainedModel, digits: Dataset
) -> None:
    a = Attacker(digits_model, copy.deepcopy(probing), ["k"], blinding=False)
    Square(ThreatModel(Norm.LINF, 0.1), max_queries=100).run(
        a, digits.x_test[:1], digits.y_test[:1], generator=torch.Generator().manual_seed(0)
    )
    _simba(a, digits)
    assert a.flagged.get("k", 10**9) <= 200


def test_attack_split_over_keys_flags_every_key_and_no_bystander(
    probing: ProbingMonitor, digits_model: TrainedModel, digits: Dataset
) -> None:
    mon = copy.deepcopy(probing)
    keys = [f"sybil-{i}" for i in range(8)]
    a = Attacker(digits_model, mon, keys, sigma=0.05)
    _simba(a, digits, images=2)
    # caught by linking the keys (a key is named once it sent shared_min_hits of the cluster's near-duplicates),
    # while each key had sent about as many queries as its own history needs (k + hits = 20)
    assert len(a.shared) >= 6 and set(a.flagged) <= set(keys), a.flagged
    assert min(a.flagged.values()) < 30 * len(keys)
    # a bystander that sends the attacked image once, among its own natural traffic, is not a suspect
    x = torch.cat([digits.x_test[:1], digits.x_test[100:140]])
    alerts = mon.observe(QueryEvent("bystander", "m", 0.0, x.flatten(1), torch.empty(0), torch.empty(0)))
    alerts += mon.observe(
        QueryEvent("bystander", "m", 0.0, digits.x_test[:1].flatten(1), torch.empty(0), torch.empty(0))
    )
    assert [al.key_id for al in alerts if al.key_id == "bystander"] == []


def test_many_keys_replaying_the_same_data_raise_nothing(probing: ProbingMonitor, digits: Dataset) -> None:
    mon = copy.deepcopy(probing)
    data = digits.x_test[:200].flatten(1)
    alerts = []
    for k in range(10):  # every key sends the very same 200 images, 10 a request
        for i in range(0, 200, 10):
            alerts += mon.observe(QueryEvent(f"client-{k}", "m", 0.0, data[i : i + 10], torch.empty(0), torch.empty(0)))
    assert alerts == []


def test_forgetting_a_key_rearms_the_shared_index(
    probing: ProbingMonitor, digits_model: TrainedModel, digits: Dataset
) -> None:
    mon = copy.deepcopy(probing)
    keys = ["a", "b", "c", "d"]
    first = Attacker(digits_model, mon, keys, sigma=0.05)
    _simba(first, digits, images=2)
    assert len(first.flagged) >= 3
    for k in keys:
        mon.forget(k)
    again = Attacker(digits_model, mon, keys, sigma=0.05)
    _simba(again, digits, images=2)
    assert len(again.flagged) >= 3


def test_encoder_is_cached_by_data_and_settings(digits: Dataset) -> None:
    settings = EncoderSettings(steps=20)
    enc = encoder_for(digits.x_train[:200], (0.0, 1.0), settings)
    cached = list(Path(cache_dir(), "similarity-encoders").glob("*.safetensors"))
    again = encoder_for(digits.x_train[:200], (0.0, 1.0), settings)
    assert torch.equal(enc.embed(digits.x_test[:5]), again.embed(digits.x_test[:5]))
    assert list(Path(cache_dir(), "similarity-encoders").glob("*.safetensors")) == cached
    other = encoder_for(digits.x_train[:200], (0.0, 1.0), EncoderSettings(steps=21))
    assert not torch.equal(enc.embed(digits.x_test[:5]), other.embed(digits.x_test[:5]))
    z = enc.embed(digits.x_test[:5])
    assert z.shape == (5, settings.dim) and torch.allclose(z.norm(dim=1), torch.ones(5), atol=1e-5)
