"""Input detectors in the gateway: scores in every audit event, flagged shares raise a key's level, and a policy
that rejects flagged inputs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from tests.gateway.conftest import Env

from bastion import PGD, Norm, ThreatModel
from bastion.data import Dataset
from bastion.errors import ConfigError
from bastion.gateway import Gateway, parse_config
from bastion.models.zoo import TrainedModel

# 8x8 digits have 17 grey levels: bit depth 2 is the squeezer that leaves them recognisable
DETECTORS = {"squeezing": {"bit_depth": 2}, "reconstruction": {"epochs": 30}}


def _pgd(model: TrainedModel, digits: Dataset, n: int = 120) -> torch.Tensor:
    attack = PGD(ThreatModel(Norm.LINF, 0.3), steps=20)
    res = attack.run(model.classifier, digits.x_test[:n], digits.y_test[:n], generator=torch.Generator().manual_seed(0))
    return res.x_adv


def _post(env: Env, key: str, x: torch.Tensor) -> tuple[int, dict]:
    r = env.client.post("/v1/models/digits/predict", json={"inputs": x.tolist()}, headers=env.h(key))
    return r.status_code, r.json()


def _events(env: Env) -> list:
    return list(env.gateway.store.iter_events())


def test_every_detector_scores_each_input_into_the_audit_event(make_env: Callable[..., Env], digits: Dataset) -> None:
    env = make_env(monitors=True, detectors=DETECTORS)
    assert env.gateway.screens["digits"].names == ["mahalanobis", "feature-squeezing", "reconstruction"]
    status, body = _post(env, env.scores, digits.x_test[:3])
    assert status == 200
    out = next(e for e in _events(env) if e.request_id == body["request_id"]).output
    assert set(out["detectors"]) == {"mahalanobis", "feature-squeezing", "reconstruction"}
    assert all(len(v) == 3 for v in out["detectors"].values())
    assert isinstance(out["flagged"], list)
    # the audited scores are the detectors' own
    direct = env.gateway.screens["digits"](digits.x_test[:3])
    for d in direct:
        assert out["detectors"][d.detector] == pytest.approx(d.scores.tolist(), abs=1e-4)


def test_a_key_sending_adversarial_inputs_is_raised_and_a_benign_key_is_not(
    make_env: Callable[..., Env], digits_model: TrainedModel, digits: Dataset
) -> None:
    env = make_env(monitors=True, detectors=DETECTORS)
    for i in range(digits.x_test.shape[0]):  # a benign client: the whole test set, one input a request
        assert _post(env, env.scores, digits.x_test[i : i + 1])[0] == 200
    adv = _pgd(digits_model, digits)
    first = None
    for i in range(adv.shape[0]):
        _, body = _post(env, env.labels, adv[i : i + 1])
        if body["threat_level"] != "normal":
            first = i + 1
            break
    assert first is not None and first <= 60, first
    incidents = env.gateway.store.list_incidents()
    kinds = {(rec.kind, rec.key_id) for rec in incidents}
    partner = env.gateway.keys.authenticate(env.labels).key_id
    app = env.gateway.keys.authenticate(env.scores).key_id
    assert ("adversarial_inputs", partner) in kinds
    assert not [k for k in kinds if k[1] == app]


def test_reject_policy_refuses_flagged_inputs_and_audits_why(
    make_env: Callable[..., Env], digits_model: TrainedModel, digits: Dataset
) -> None:
    env = make_env(monitors=True, detectors={**DETECTORS, "reject": True})
    screen = env.gateway.screens["digits"]
    clean_ok = digits.x_test[:40][~screen.flagged(screen(digits.x_test[:40]))][:5]
    assert _post(env, env.scores, clean_ok)[0] == 200
    adv = _pgd(digits_model, digits, 40)
    adv = adv[screen.flagged(screen(adv))][:2]
    status, body = _post(env, env.scores, torch.cat([clean_ok[:1], adv]))
    assert status == 422 and body["error"]["code"] == "input_rejected"
    assert "[1, 2]" in body["error"]["message"]
    event = next(e for e in _events(env) if e.request_id == body["error"]["request_id"])
    assert event.decision == "refused:input_rejected" and event.output["flagged"] == [1, 2]
    assert set(event.output["detectors"]) == set(screen.names)


def test_detectors_follow_the_configuration(make_env: Callable[..., Env]) -> None:
    env = make_env(monitors=True, detectors={"mahalanobis": {"enabled": False}, "reconstruction": {"enabled": False}})
    assert env.gateway.screens["digits"].names == ["feature-squeezing"]
    assert make_env(monitors=True, detectors={"enabled": False}).gateway.screens["digits"].names == []


def test_mahalanobis_on_a_scikit_learn_model_is_skipped_by_default_and_refused_when_asked_for(
    user_models: dict[str, Path], tmp_path: Path
) -> None:
    def config(detectors: dict) -> object:
        return parse_config(
            {
                "models": {"m": {"paths": [str(user_models["skops"])], "input_shape": [1, 8, 8]}},
                "database": str(tmp_path / "g.db"),
                "monitors": {"baseline": "digits"},
                "detectors": detectors,
            },
            base=tmp_path,
        )

    gw = Gateway.from_config(config({"reconstruction": {"enabled": False}}))  # type: ignore[arg-type]
    try:
        assert gw.screens["m"].names == ["feature-squeezing"]
    finally:
        gw.close()
    with pytest.raises(ConfigError, match="mahalanobis needs a torch model"):
        Gateway.from_config(config({"mahalanobis": {"enabled": True}}))  # type: ignore[arg-type]


def test_the_fused_pass_gives_the_models_answer_and_each_detectors_own_scores(
    make_env: Callable[..., Env], digits: Dataset
) -> None:
    env = make_env(monitors=True, detectors=DETECTORS)
    screen, model = env.gateway.screens["digits"], env.gateway.models["digits"]
    x = digits.x_test[:50]
    out, fused = screen.predict(model, x)
    assert torch.allclose(out.probs, model.predict(x).probs, atol=1e-5)
    for f, own in zip(fused, screen(x), strict=True):
        assert f.detector == own.detector
        assert torch.allclose(f.scores, own.scores, rtol=1e-4, atol=1e-5), f.detector
        assert torch.equal(f.flagged, own.flagged)


def test_onnxruntime_serving_answers_as_pytorch_does(make_env: Callable[..., Env], digits: Dataset) -> None:
    """The default runtime moves the model (with the layer Mahalanobis reads), the autoencoder and the similarity
    encoder to onnxruntime; answers, scores and audited detector scores equal PyTorch's."""
    fast = make_env(monitors=True, detectors=DETECTORS)
    slow = make_env(monitors=True, detectors=DETECTORS, runtime="torch", database=str(fast.tmp / "torch.db"))
    member = fast.gateway.models["digits"].members[0]
    assert member._compiled is not None and len(member._compiled.taps) == 1
    assert slow.gateway.models["digits"].members[0]._compiled is None
    reconstruction = fast.gateway.screens["digits"].detectors[2]
    assert reconstruction._compiled is not None
    # the similarity encoder's pooling does not export for 8x8 digits: it stays on PyTorch (logged); for 28x28
    # images it exports (tests/models/test_runtime.py)
    x = digits.x_test[:20]
    (sa, a), (sb, b) = _post(fast, fast.scores, x), _post(slow, slow.scores, x)
    assert sa == sb == 200 and a["labels"] == b["labels"]
    assert torch.allclose(torch.tensor(a["scores"]), torch.tensor(b["scores"]), atol=1e-5)
    da = next(e for e in _events(fast) if e.request_id == a["request_id"]).output["detectors"]
    db = next(e for e in _events(slow) if e.request_id == b["request_id"]).output["detectors"]
    for name in da:
        assert da[name] == pytest.approx(db[name], rel=1e-3, abs=1e-4), name
