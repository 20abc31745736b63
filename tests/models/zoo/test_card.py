from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from bastion import ArtifactError, IntegrityError, UnknownNameError, load_model, save_model, train_model
from bastion.data import Dataset
from bastion.models.zoo import TrainedModel, read_card
from bastion.models.zoo.card import sha256_file


def test_round_trip_gives_identical_outputs(
    digits_model: TrainedModel, digits_model_file: Path, digits: Dataset
) -> None:
    loaded = load_model(digits_model_file)
    x = digits.x_test[:32]
    assert torch.equal(loaded.classifier.predict_logits(x), digits_model.classifier.predict_logits(x))
    card = read_card(digits_model_file)
    assert card.weights_sha256 == sha256_file(digits_model_file)
    assert card.dataset["sha256"] == digits.provenance.sha256
    assert card.architecture == "digits-cnn" and card.seed == 0 and card.epochs == 15
    assert 0.9 < card.clean_accuracy <= 1.0


def test_card_json_has_the_documented_fields(digits_model_file: Path) -> None:
    d = json.loads(digits_model_file.with_suffix(".json").read_text())
    for key in (
        "architecture",
        "arch_params",
        "dataset",
        "seed",
        "epochs",
        "clean_accuracy",
        "weights_sha256",
        "spec",
        "versions",
    ):
        assert key in d


def test_tampered_weights_are_refused(digits_model_file: Path, tmp_path: Path) -> None:
    target = tmp_path / "m.safetensors"
    shutil.copy(digits_model_file, target)
    shutil.copy(digits_model_file.with_suffix(".json"), tmp_path / "m.json")
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="refusing to load"):
        load_model(target)


def test_missing_or_malformed_cards(digits_model_file: Path, tmp_path: Path) -> None:
    target = tmp_path / "m.safetensors"
    shutil.copy(digits_model_file, target)
    with pytest.raises(ArtifactError, match="no model card"):
        load_model(target)
    (tmp_path / "m.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        load_model(target)
    (tmp_path / "m.json").write_text(json.dumps({"name": "x"}))
    with pytest.raises(ArtifactError, match="lacks the fields"):
        load_model(target)


def test_pickle_files_and_missing_files_are_refused(tmp_path: Path) -> None:
    p = tmp_path / "model.pt"
    p.write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(ArtifactError, match="never loads pickled models"):
        load_model(p)
    with pytest.raises(ArtifactError, match="does not exist"):
        load_model(tmp_path / "absent.safetensors")


def test_training_is_seeded(digits: Dataset, tmp_path: Path) -> None:
    a = train_model(digits, epochs=1, seed=3)
    b = train_model(digits, epochs=1, seed=3)
    c = train_model(digits, epochs=1, seed=4)
    ca = save_model(a.module, a.card, tmp_path / "a.safetensors")
    cb = save_model(b.module, b.card, tmp_path / "b.safetensors")
    cc = save_model(c.module, c.card, tmp_path / "c.safetensors")
    assert ca.weights_sha256 == cb.weights_sha256 != cc.weights_sha256


def test_unknown_architecture(digits: Dataset) -> None:
    with pytest.raises(UnknownNameError, match="unknown architecture 'resnet'"):
        train_model(digits, architecture="resnet", epochs=1)


def test_tabular_mlp_trains_on_breast_cancer() -> None:
    from bastion import load_dataset

    trained = train_model(load_dataset("breast-cancer"), epochs=30, seed=0)
    assert trained.card.architecture == "tabular-mlp" and trained.card.clean_accuracy > 0.9
