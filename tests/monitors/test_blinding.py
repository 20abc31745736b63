"""Probing detection against attackers who know it is there: query blinding, attacks split over keys."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest
import torch

from bastion import Norm, SimBA, Square, ThreatModel
from bastion._cache import cache_dir
from bastion.data import Dataset, load_dataset
from bastion.models.zoo import TrainedModel, train_model
from bastion.monitors import MONITORS, QueryEvent
from bastion.monitors.query_patterns import ProbingMonitor, ProbingSettings
from bastion.monitors.similarity import EncoderSettings, encoder_for


def blind(x: torch.Tensor, g: torch.Generator, sigma: float = 0.1, shift: int = 2) -> torch.Tensor:
    """The attacker's blinding, per query: contrast x0.8-1.2, brightness +-0.1, a shift of up to ``shift`` pixels
    (wrapping), Gaussian noise ``sigma``: all that issue 9 asks the monitor to survive."""
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
def fmnist() -> Dataset:
    """Fashion-MNIST cut to 4,000 training images: the issue's data, small enough to train on in seconds."""
    full = load_dataset("fashion-mnist")
    return dataclasses.replace(full, x_train=full.x_train[:4_000], y_train=full.y_train[:4_000])


@pytest.fixture(scope="module")
def model(fmnist: Dataset) -> TrainedModel:
    return train_model(fmnist, epochs=3, seed=0)


@pytest.fixture(scope="module")
def probing(fmnist: Dataset) -> ProbingMonitor:
    """The gateway's probing monitor as the registry builds it (encoder included, 400 training steps instead of
    1,500 to keep the suite fast: it trains on 2,000 images and sets its threshold on the other 2,000)."""
    settings = ProbingSettings(encoder_steps=400)
    return MONITORS.get("probing").build(settings, fmnist.x_train, torch.empty(0))  # type: ignore[return-value]


def _simba(attacker: Attacker, data: Dataset, images: int = 6) -> None:
    attack = SimBA(ThreatModel(Norm.LINF, 0.1), max_queries=150, basis="pixel")
    for j in range(images):
        attack.run(attacker, data.x_test[j : j + 1], data.y_test[j : j + 1], generator=torch.Generator().manual_seed(j))


def test_blinded_simba_is_flagged_within_500_queries(
    probing: ProbingMonitor, model: TrainedModel, fmnist: Dataset
) -> None:
    """Noise sigma 0.1, shifts of up to 2 px and brightness/contrast jitter on every query."""
    robust = Attacker(model, copy.deepcopy(probing), ["k"])
    _simba(robust, fmnist)
    assert robust.queries > 500 and robust.flagged.get("k", 10**9) <= 500, robust.flagged


def test_unblinded_attack_is_still_flagged_within_200_queries(
    probing: ProbingMonitor, model: TrainedModel, fmnist: Dataset
) -> None:
    a = Attacker(model, copy.deepcopy(probing), ["k"], blinding=False)
    Square(ThreatModel(Norm.LINF, 0.1), max_queries=100).run(
        a, fmnist.x_test[:1], fmnist.y_test[:1], generator=torch.Generator().manual_seed(0)
    )
    _simba(a, fmnist)
    assert a.flagged.get("k", 10**9) <= 200


@pytest.mark.parametrize("n_keys", [8, 50])
def test_attack_split_over_keys_flags_every_key_and_no_bystander(
    n_keys: int, probing: ProbingMonitor, model: TrainedModel, fmnist: Dataset
) -> None:
    """About 600 attack queries over 8 keys (~75 each) or 50 keys (~12 each): each key is named by the shared
    index, whatever share of the attack it carried."""
    mon = copy.deepcopy(probing)
    keys = [f"sybil-{i}" for i in range(n_keys)]
    a = Attacker(model, mon, keys, sigma=0.05)
    _simba(a, fmnist)
    # caught by linking the keys (a key is named once it sent shared_min_hits of the cluster's near-duplicates),
    # while each key had sent about as many queries as its own history needs (k + hits = 20)
    assert len(a.shared) >= 0.75 * n_keys and set(a.flagged) <= set(keys), a.flagged
    assert min(a.flagged.values()) < 30 * len(keys)
    # a bystander that sends the attacked image once, among its own natural traffic, is not a suspect
    x = torch.cat([fmnist.x_test[:1], fmnist.x_test[100:140]])
    alerts = mon.observe(QueryEvent("bystander", "m", 0.0, x.flatten(1), torch.empty(0), torch.empty(0)))
    alerts += mon.observe(
        QueryEvent("bystander", "m", 0.0, fmnist.x_test[:1].flatten(1), torch.empty(0), torch.empty(0))
    )
    assert [al.key_id for al in alerts if al.key_id == "bystander"] == []


def test_many_keys_replaying_the_same_data_raise_nothing(probing: ProbingMonitor, fmnist: Dataset) -> None:
    mon = copy.deepcopy(probing)
    data = fmnist.x_test[:200].flatten(1)
    alerts = []
    for k in range(10):  # every key sends the very same 200 images, 10 a request
        for i in range(0, 200, 10):
            alerts += mon.observe(QueryEvent(f"client-{k}", "m", 0.0, data[i : i + 10], torch.empty(0), torch.empty(0)))
    assert alerts == []


def test_forgetting_a_key_rearms_the_shared_index(
    probing: ProbingMonitor, model: TrainedModel, fmnist: Dataset
) -> None:
    mon = copy.deepcopy(probing)
    keys = ["a", "b", "c", "d"]
    first = Attacker(model, mon, keys, sigma=0.05)
    _simba(first, fmnist)
    assert len(first.flagged) >= 3
    for k in keys:
        mon.forget(k)
    again = Attacker(model, mon, keys, sigma=0.05)
    _simba(again, fmnist)
    assert len(again.flagged) >= 3


def test_encoder_is_cached_by_data_and_settings(
    digits: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BASTION_CACHE_DIR", str(tmp_path))
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


def test_tabular_rows_of_any_scale_blinded_per_feature() -> None:
    """A user's table with features from 0.001 to 4,000 (scikit-learn's breast cancer, unscaled): noise of a tenth
    of each feature's spread hides near-duplicates in input space, not from the encoder (which standardises the
    features and learns noise per feature); natural rows stay below the alarm."""
    from sklearn.datasets import load_breast_cancer

    x = torch.tensor(load_breast_cancer().data, dtype=torch.float32)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    train, test = x[perm[:400]], x[perm[400:]]
    encoded = MONITORS.get("probing").build(ProbingSettings(), train, torch.empty(0))
    raw = ProbingMonitor.calibrate(train, k=10)
    g = torch.Generator().manual_seed(1)

    def caught(mon: ProbingMonitor) -> float:
        hits = 0
        for i in range(30):
            copies = test[i : i + 1] + 0.1 * train.std(0) * torch.randn(30, 30, generator=g)
            hits += int(
                bool(
                    (ProbingMonitor.knn_mean(*[mon.features(copies)] * 2, 10, exclude_self=True) < mon.threshold)
                    .float()
                    .mean()
                    > 0.5
                )
            )
        return hits / 30

    assert caught(encoded) >= 0.9 and caught(raw) <= 0.1  # type: ignore[arg-type]
    alerts = []
    for i in range(0, len(test), 5):
        alerts += encoded.observe(QueryEvent("client", "m", 0.0, test[i : i + 5], torch.empty(0), torch.empty(0)))
    assert alerts == []
    f = encoded.features(test)  # type: ignore[attr-defined]
    natural = ProbingMonitor.knn_mean(f, f, 10, exclude_self=True)
    assert float((natural < encoded.threshold).float().mean()) <= 0.02  # type: ignore[attr-defined]
