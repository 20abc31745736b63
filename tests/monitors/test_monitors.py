"""Streaming monitors: quiet on natural traffic, alert on the traffic of attacks."""

from __future__ import annotations

import pytest
import torch

from bastion import Norm, ThreatModel
from bastion.attacks import HopSkipJump, Square
from bastion.data import Dataset
from bastion.defenses.ensemble import Ensemble
from bastion.models.zoo import TrainedModel
from bastion.monitors import Alert, QueryEvent
from bastion.monitors.confidence import ConfidenceMonitor
from bastion.monitors.query_patterns import ExtractionMonitor, ProbingMonitor


class Watched:
    """A classifier whose every query is fed to monitors, recording when each kind of alert first fired."""

    def __init__(self, model: TrainedModel, monitors: list[object], key: str = "k") -> None:
        self.inner = Ensemble([model.classifier])
        self.spec, self.queries, self.monitors, self.key = self.inner.spec, 0, monitors, key
        self.first: dict[str, int] = {}
        self.alerts: list[Alert] = []

    def predict_logits(self, x: torch.Tensor) -> torch.Tensor:
        p = self.inner.predict(x).probs
        self.queries += len(x)
        for m in self.monitors:
            for a in m.observe(QueryEvent(self.key, "m", 0.0, x.flatten(1), p, p.argmax(1))):  # type: ignore[attr-defined]
                self.first.setdefault(a.kind, self.queries)
                self.alerts.append(a)
        return p.log()


def _monitors(model: TrainedModel, digits: Dataset) -> list[object]:
    clean = digits.x_train[:1000]
    with torch.no_grad():
        probs = Ensemble([model.classifier]).predict(clean).probs
    return [ConfidenceMonitor.from_probabilities(probs), ExtractionMonitor(), ProbingMonitor.calibrate(clean)]


def test_benign_replay_of_test_data_raises_nothing(digits_model: TrainedModel, digits: Dataset) -> None:
    for seed in range(3):
        w = Watched(digits_model, _monitors(digits_model, digits))
        perm = torch.randperm(len(digits.x_test), generator=torch.Generator().manual_seed(seed))
        for i in range(0, len(perm), 8):
            w.predict_logits(digits.x_test[perm[i : i + 8]])
        assert w.alerts == [], [a.message for a in w.alerts]


def test_square_and_hopskipjump_are_flagged_as_probing_within_200_queries(
    digits_model: TrainedModel, digits: Dataset
) -> None:
    x, y = digits.x_test[:5], digits.y_test[:5]
    w = Watched(digits_model, _monitors(digits_model, digits))
    Square(ThreatModel(Norm.LINF, 0.1), max_queries=100).run(w, x, y, generator=torch.Generator().manual_seed(0))
    assert w.first.get("probing", 10**9) <= 200
    w = Watched(digits_model, _monitors(digits_model, digits))
    HopSkipJump(ThreatModel(Norm.L2, 2.0), max_queries=150).run(w, x, y, generator=torch.Generator().manual_seed(0))
    assert w.first.get("probing", 10**9) <= 200
    probing = next(a for a in w.alerts if a.kind == "probing")
    assert probing.atlas == "AML.T0043" and probing.key_id == "k" and probing.evidence["near_duplicates"] >= 10


def test_probing_keeps_state_per_key(digits_model: TrainedModel, digits: Dataset) -> None:
    mon = ProbingMonitor.calibrate(digits.x_train[:500])
    x = digits.x_test[:1].flatten(1)
    p = torch.full((1, 10), 0.1)
    alerts = []
    for i in range(30):  # the same input sent 30 times, alternating between two keys: 15 each
        alerts += mon.observe(QueryEvent(f"k{i % 2}", "m", 0.0, x, p, p.argmax(1)))
    assert {a.key_id for a in alerts} == {"k0", "k1"} and len(alerts) == 2  # one alert per key, not repeated


def test_extraction_monitor_flags_synthetic_queries_around_a_few_seeds(
    digits_model: TrainedModel, digits: Dataset
) -> None:
    """Synthetic extraction data made by perturbing a handful of seeds: PRADA's distance distribution collapses."""
    mon = ExtractionMonitor()
    model, g = digits_model.classifier, torch.Generator().manual_seed(0)
    seeds = digits.x_test[:10]
    alerts = []
    for _ in range(40):
        q = (seeds + 0.05 * torch.randn(seeds.shape, generator=g)).clamp(0, 1)
        labels = model.predict_logits(q).argmax(1)
        probs = torch.nn.functional.one_hot(labels, 10).float()
        alerts += mon.observe(QueryEvent("x", "m", 0.0, q.flatten(1), probs, labels))
    assert [a.kind for a in alerts] == ["extraction"]
    assert alerts[0].evidence["queries"] <= 2000 and alerts[0].evidence["shapiro_w"] < 0.85
    assert alerts[0].atlas == "AML.T0024.002"


def test_jacobian_augmentation_is_flagged_by_the_probing_monitor(digits_model: TrainedModel, digits: Dataset) -> None:
    """Papernot-style augmentation (x + lambda * sign of a substitute's gradient) sends near-copies of earlier queries."""
    w = Watched(digits_model, _monitors(digits_model, digits))
    x = digits.x_test[:20].clone()
    sub = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    y = w.predict_logits(x).argmax(1)
    while w.queries < 2000:
        opt = torch.optim.Adam(sub.parameters(), lr=0.05)
        for _ in range(30):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(sub(x), y).backward()
            opt.step()
        xg = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(sub(xg).gather(1, y[:, None]).sum(), xg)
        new = (x + 0.1 * g.sign()).clamp(0, 1)[: 2000 - w.queries]
        x, y = torch.cat([x, new]), torch.cat([y, w.predict_logits(new).argmax(1)])
    assert w.first.get("probing", 10**9) <= 2000


def test_confidence_monitor_flags_low_confidence_traffic(digits_model: TrainedModel, digits: Dataset) -> None:
    clean = digits.x_train[:1000]
    with torch.no_grad():
        probs = Ensemble([digits_model.classifier]).predict(clean).probs
    mon = ConfidenceMonitor.from_probabilities(probs)
    g = torch.Generator().manual_seed(0)
    alerts = []
    for _ in range(10):  # uniform noise images: the model is unsure about them
        noise = torch.rand(20, 1, 8, 8, generator=g)
        p = Ensemble([digits_model.classifier]).predict(noise).probs
        alerts += mon.observe(QueryEvent("n", "m", 0.0, noise.flatten(1), p, p.argmax(1)))
    assert [a.kind for a in alerts] == ["confidence"]
    assert alerts[0].evidence["p_value"] < 1e-6


def test_confidence_gate_never_hides_a_rejection() -> None:
    """The cheap statistic equals scipy's (ties included), and whenever scipy's exact test rejects, the gate lets it
    run: the gate saves time, never an alert."""
    from scipy.stats import ks_2samp

    g = torch.Generator().manual_seed(0)
    base = torch.rand(2000, generator=g).mul(20).round().div(20)  # rounded: many ties, like real confidences
    mon = ConfidenceMonitor(base)
    rejected = 0
    for i in range(300):
        shift = (i % 30) / 75
        recent = (torch.rand(100 + i % 101, generator=g) + shift).clamp(max=1).mul(20).round().div(20).double().numpy()
        exact = ks_2samp(recent, mon._base)
        assert mon._statistic(recent) == pytest.approx(float(exact.statistic), abs=1e-12)
        if exact.pvalue < mon.p_value:
            rejected += 1
            assert mon._may_reject(recent)
    assert rejected > 50  # the property was exercised near and beyond the threshold
    natural = base[torch.randperm(2000, generator=g)[:200]].double().numpy()
    assert not mon._may_reject(natural)  # and on natural traffic scipy is skipped


def test_batched_and_one_by_one_queries_are_scored_alike(digits: Dataset) -> None:
    """The monitors' single-query fast paths must agree with their batch paths."""
    base = digits.x_test[:10].flatten(1)
    g = torch.Generator().manual_seed(0)
    copies = [base + 0.02 * torch.rand(base.shape, generator=g) for _ in range(5)]
    x = torch.cat([base, *copies])  # natural inputs, then five rounds of near-copies
    labels = torch.arange(60) % 10
    p = torch.nn.functional.one_hot(labels, 10).float()
    one, batch = ProbingMonitor.calibrate(digits.x_train[:500]), ProbingMonitor.calibrate(digits.x_train[:500])
    ext_one, ext_batch = ExtractionMonitor(), ExtractionMonitor()
    for i in range(60):
        ev = QueryEvent("k", "m", 0.0, x[i : i + 1], p[i : i + 1], labels[i : i + 1])
        one.observe(ev)
        ext_one.observe(ev)
    for i in range(0, 60, 20):
        ev = QueryEvent("k", "m", 0.0, x[i : i + 20], p[i : i + 20], labels[i : i + 20])
        batch.observe(ev)
        ext_batch.observe(ev)
    assert list(one._keys["k"].hits) == list(batch._keys["k"].hits) and len(one._keys["k"].hits) >= 20
    assert torch.allclose(one._keys["k"].buffer[:60], batch._keys["k"].buffer[:60])
    # PRADA's statistic ignores order; a batch is recorded class by class
    assert sorted(ext_one._keys["k"].dists) == pytest.approx(sorted(ext_batch._keys["k"].dists), rel=1e-3)


def test_per_key_state_is_bounded(digits: Dataset) -> None:
    mon = ProbingMonitor.calibrate(digits.x_train[:300], max_keys=3)
    p = torch.full((1, 10), 0.1)
    for i in range(5):
        mon.observe(QueryEvent(f"k{i}", "m", 0.0, digits.x_test[i : i + 1].flatten(1), p, p.argmax(1)))
    mon.observe(QueryEvent("k2", "m", 0.0, digits.x_test[:1].flatten(1), p, p.argmax(1)))  # k2 seen again: kept
    mon.observe(QueryEvent("k5", "m", 0.0, digits.x_test[:1].flatten(1), p, p.argmax(1)))
    assert len(mon._keys) == 3 and "k2" in mon._keys and "k0" not in mon._keys and "k3" not in mon._keys


def test_extraction_threshold_follows_natural_traffic_of_a_users_table() -> None:
    """Breast-cancer rows in raw units (features from 0.001 to 4,000): a client replaying natural rows reaches W
    0.65, which the fixed 0.85 flagged as extraction. The built monitor sets its threshold below what the clean rows
    reach, so the replay raises nothing; on images (W above 0.95) the configured threshold stands."""
    from sklearn.datasets import load_breast_cancer

    from bastion.monitors import MONITORS
    from bastion.monitors.query_patterns import ExtractionSettings

    x = torch.tensor(load_breast_cancer().data, dtype=torch.float32)
    labels = torch.tensor(load_breast_cancer().target)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    train, test = perm[:400], perm[400:]
    probs = torch.nn.functional.one_hot(labels, 2).float()
    fixed = ExtractionMonitor()
    built = MONITORS.get("extraction").build(ExtractionSettings(), x[train], probs[train])
    assert built.threshold < 0.85  # type: ignore[attr-defined]

    def replay(mon: object) -> list[Alert]:
        out: list[Alert] = []
        for i in range(0, len(test), 10):
            idx = test[i : i + 10]
            out += mon.observe(QueryEvent("client", "m", 0.0, x[idx], probs[idx], labels[idx]))  # type: ignore[attr-defined]
        return out

    assert [a.kind for a in replay(fixed)] == ["extraction"]  # the false positive the calibration removes
    assert replay(built) == []


def test_probing_reads_the_features_the_gateway_prepared(digits: Dataset) -> None:
    """``event.prepared["probing"]`` stands in for the monitor's own features: distinct test images whose prepared
    features are one repeated vector look like a key repeating one query (flagged), and without it they do not."""
    mon, plain = ProbingMonitor.calibrate(digits.x_train[:500]), ProbingMonitor.calibrate(digits.x_train[:500])
    x = digits.x_test[:60].flatten(1)
    same = mon.prepare(x[:1]).repeat(60, 1)
    p = torch.full((60, 10), 0.1)
    assert torch.allclose(mon.prepare(x), mon.features(x))
    flagged = plain_alerts = 0
    for i in range(60):
        flagged += len(
            mon.observe(
                QueryEvent("k", "m", 0.0, x[i : i + 1], p[:1], p[:1].argmax(1), (), {"probing": same[i : i + 1]})
            )
        )
        plain_alerts += len(plain.observe(QueryEvent("k", "m", 0.0, x[i : i + 1], p[:1], p[:1].argmax(1))))
    assert flagged > 0 and plain_alerts == 0


@pytest.mark.parametrize(("share", "framed"), [(0.2, False), (0.0, True)])
def test_a_busy_client_is_not_framed_by_an_attack_near_its_own_inputs(share: float, framed: bool) -> None:
    """Four keys probe near-duplicates of one point P; a busy client that sent 100 inputs of its own then sends four
    inputs close to P (as a client does whose natural data holds images like the attacked one). The attack keys
    are named; the client is not, because P's cluster is a small share of its traffic (with the share rule off,
    shared_min_hits near-duplicates alone name it: an attacker could frame a client by probing near its data)."""
    from bastion.monitors.query_patterns import ProbingMonitor

    g = torch.Generator().manual_seed(0)
    mon = ProbingMonitor(threshold=0.3, k=5, hits=10, shared_min_share=share)
    natural = torch.rand(100, 16, generator=g)
    for i in range(0, 100, 10):
        assert mon.observe(QueryEvent("client", "m", 0.0, natural[i : i + 10], torch.empty(0), torch.empty(0))) == []
    p = torch.rand(1, 16, generator=g)
    alerts = []
    for i in range(24):  # round-robin over four attack keys, one query each
        q = p + 0.01 * torch.randn(1, 16, generator=g)
        alerts += mon.observe(QueryEvent(f"sybil-{i % 4}", "m", 0.0, q, torch.empty(0), torch.empty(0)))
    for _ in range(4):
        q = p + 0.01 * torch.randn(1, 16, generator=g)
        alerts += mon.observe(QueryEvent("client", "m", 0.0, q, torch.empty(0), torch.empty(0)))
    named = {a.key_id for a in alerts}
    assert {f"sybil-{i}" for i in range(4)} <= named
    assert ("client" in named) is framed


def test_keys_attacking_many_inputs_at_once_are_named_by_their_share_over_all_clusters() -> None:
    """Four keys attack nine points at once, round-robin (Square on a batch of images, split over keys): each
    point's cluster holds a ninth of each key's queries, below the 0.2 share, but all of each key's traffic is
    attack; the keys are named within 40 queries each (judged per cluster they were not named in 160; in
    bench/gateway.py's Sybil run the flag came after 566 queries per cluster, 150 over all clusters)."""
    from bastion.monitors.query_patterns import ProbingMonitor

    g = torch.Generator().manual_seed(0)
    mon = ProbingMonitor(threshold=0.3, k=5, hits=10, shared_min_share=0.2)
    mon.observe(QueryEvent("client", "m", 0.0, torch.rand(100, 16, generator=g), torch.empty(0), torch.empty(0)))
    points = torch.rand(9, 16, generator=g)  # 9 and 4 coprime: every key sends to every point
    named: dict[str, int] = {}
    for i in range(160):
        q = points[i % 9 : i % 9 + 1] + 0.01 * torch.randn(1, 16, generator=g)
        for a in mon.observe(QueryEvent(f"sybil-{i % 4}", "m", 0.0, q, torch.empty(0), torch.empty(0))):
            named.setdefault(str(a.key_id), i + 1)
    assert set(named) == {f"sybil-{i}" for i in range(4)}, named
    assert max(named.values()) <= 160  # every key named within its first 40 queries


def test_a_client_replaying_common_data_is_not_named_for_two_inputs_near_an_attack() -> None:
    """The client's traffic is data other clients sent first (exact repeats, which the shared index does not keep):
    its two inputs near the attacked point are two of its 102 queries, not two of the two it owns in the index."""
    from bastion.monitors.query_patterns import ProbingMonitor

    g = torch.Generator().manual_seed(1)
    mon = ProbingMonitor(threshold=0.3, k=5, hits=10)
    common = torch.rand(100, 16, generator=g)
    for key in ("first-client", "client"):
        for i in range(0, 100, 10):
            mon.observe(QueryEvent(key, "m", 0.0, common[i : i + 10], torch.empty(0), torch.empty(0)))
    p = torch.rand(1, 16, generator=g)
    alerts = []
    for i in range(24):
        q = p + 0.01 * torch.randn(1, 16, generator=g)
        alerts += mon.observe(QueryEvent(f"sybil-{i % 4}", "m", 0.0, q, torch.empty(0), torch.empty(0)))
    for _ in range(2):
        q = p + 0.01 * torch.randn(1, 16, generator=g)
        alerts += mon.observe(QueryEvent("client", "m", 0.0, q, torch.empty(0), torch.empty(0)))
    named = {a.key_id for a in alerts}
    assert {f"sybil-{i}" for i in range(4)} <= named and "client" not in named, named


def test_an_alert_survives_its_dict_form() -> None:
    """What replicas publish and spools keep is ``Alert.to_dict``; ``from_dict`` gives the same alert back."""
    from bastion.monitors.base import Alert, Severity

    for key in ("k1", None):
        a = Alert("probing", "probing", key, Severity.CRITICAL, "m", 1.5, "AML.T0043", 12.0, {"n": [1, 2]})
        assert Alert.from_dict(a.to_dict()) == a
