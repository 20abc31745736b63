"""The predict API's answers: ensembles, top-k and rounded releases, the model list and the metrics."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from tests.gateway.conftest import Env

from bastion.data import Dataset
from bastion.models.zoo import load_model, save_model, train_model


@pytest.fixture(scope="module")
def second_model_file(digits: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    trained = train_model(digits, epochs=3, seed=1)  # a weaker, different member
    path = tmp_path_factory.mktemp("zoo2") / "digits-b.safetensors"
    save_model(trained.module, trained.card, path)
    return path


def test_an_ensemble_answers_with_mean_probabilities_and_records_disagreement(
    make_env: Callable[..., Env], digits_model_file: Path, second_model_file: Path, digits: Dataset
) -> None:
    env = make_env(models={"digits": {"paths": [str(digits_model_file), str(second_model_file)]}})
    x = digits.x_test[:40]
    r = env.client.post("/v1/models/digits/predict", json={"inputs": x.tolist()}, headers=env.h(env.scores)).json()
    a, b = (
        torch.softmax(load_model(p).classifier.predict_logits(x), 1) for p in (digits_model_file, second_model_file)
    )
    mean = (a + b) / 2
    assert torch.allclose(torch.tensor(r["scores"]), mean, atol=1e-5)
    assert r["labels"] == mean.argmax(1).tolist()
    expected = float(((a.argmax(1) != mean.argmax(1)).float() + (b.argmax(1) != mean.argmax(1)).float()).mean() / 2)
    assert expected > 0  # the two members do disagree somewhere on these inputs
    event = list(env.gateway.store.iter_events())[-1]
    assert event.output["disagreement"] == pytest.approx(expected, abs=1e-4)
    models = env.client.get("/v1/models", headers=env.h(env.labels)).json()["models"]
    assert models == [
        {"name": "digits", "input_shape": [1, 8, 8], "num_classes": 10, "bounds": [0.0, 1.0], "members": 2}
    ]
    metrics = env.client.get("/metrics", headers=env.h(env.admin)).text
    assert (
        'bastion_inputs_total{model="digits"} 40.0' in metrics and "bastion_ensemble_disagreement_count 40.0" in metrics
    )


def test_top_k_release_lists_k_classes(make_env: Callable[..., Env], digits: Dataset) -> None:
    env = make_env(levels={"normal": {"postprocess": [{"name": "top_k", "k": 3}]}})
    r = env.client.post(
        "/v1/models/digits/predict", json={"inputs": digits.x_test[:2].tolist()}, headers=env.h(env.scores)
    ).json()
    assert r["release"] == "top_k" and "scores" not in r
    assert [len(t) for t in r["top_k"]] == [3, 3]
    assert [t[0]["label"] for t in r["top_k"]] == r["labels"]
    assert r["top_k"][0][0]["score"] >= r["top_k"][0][1]["score"] >= r["top_k"][0][2]["score"]


def test_mismatched_ensemble_members_are_refused(
    make_env: Callable[..., Env], digits_model_file: Path, tmp_path: Path
) -> None:
    from bastion.data import load_dataset
    from bastion.errors import ConfigError

    cancer = load_dataset("breast-cancer")
    other = train_model(cancer, epochs=1, seed=0)
    path = tmp_path / "cancer.safetensors"
    save_model(other.module, other.card, path)
    with pytest.raises(ConfigError, match="must match"):
        make_env(models={"digits": {"paths": [str(digits_model_file), str(path)]}})


def test_web_layer_refusals_are_audited(env: Env) -> None:
    before = env.gateway.store.count_events()
    r1 = env.client.get("/v1/nothing", headers=env.h(env.scores))
    r2 = env.client.post("/v1/admin/keys", json={"name": "x"}, headers=env.h(env.admin))
    events = list(env.gateway.store.iter_events())[before:]
    assert [(e.status, e.decision) for e in events] == [(404, "refused:not_found"), (422, "refused:bad_request")]
    assert events[0].request_id == r1.json()["error"]["request_id"] and events[1].key_id is not None
    assert r2.json()["error"]["request_id"] == events[1].request_id


def test_request_metrics_are_labelled_by_route_not_by_id(env: Env, digits: Dataset) -> None:
    env.client.post("/v1/models/digits/predict", json={"inputs": digits.x_test[:1].tolist()}, headers=env.h(env.scores))
    env.client.delete("/v1/admin/keys/feedfacefeed", headers=env.h(env.admin))  # 404: no such key
    text = env.client.get("/metrics", headers=env.h(env.admin)).text
    assert 'bastion_requests_total{endpoint="/v1/models/{name}/predict",status="200"} 1.0' in text
    assert 'endpoint="/v1/admin/keys/{key_id}",status="404"' in text and "feedfacefeed" not in text


def test_the_openapi_schema_defines_its_error_body_and_bearer_security(env: Env) -> None:
    spec = env.client.get("/openapi.json", headers=env.h(env.labels)).json()
    schemas = spec["components"]["schemas"]
    assert {"Error", "ErrorDetail"} <= set(schemas)
    assert schemas["Error"]["properties"]["error"]["$ref"] == "#/components/schemas/ErrorDetail"
    refs = json.dumps(spec).count('"#/components/schemas/Error"')
    assert refs > 0  # every refusal points at a schema that now exists
    assert spec["components"]["securitySchemes"]["bearerKey"]["scheme"] == "bearer"
    assert spec["security"] == [{"bearerKey": []}] and spec["paths"]["/healthz"]["get"]["security"] == []
