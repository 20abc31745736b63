"""Versions, lineage read from Bastion's own records, and export."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from bastion.data import load_dataset
from bastion.errors import ArtifactError, ConfigError
from bastion.models.zoo import load_model, save_model
from bastion.registry.manifest import MANIFEST_FILE

from .conftest import Signed


def perturbed(src: Path, out: Path, **card_changes: object) -> Path:
    """A copy of the model in ``src`` with slightly different weights (a retrained version), saved with its card."""
    import torch

    zoo = load_model(src)
    module = zoo.classifier.module
    with torch.no_grad():
        next(module.parameters()).add_(0.001)
    save_model(module, dataclasses.replace(zoo.card, **card_changes), out)  # type: ignore[arg-type]
    return out


def test_a_retrained_model_is_a_new_version_pointing_at_the_previous(
    signed: Signed, digits_model_file: Path, tmp_path: Path
) -> None:
    with pytest.raises(ArtifactError, match="has exactly these files"):
        signed.registry.add_model(digits_model_file)
    name = load_model(digits_model_file).card.name
    v2 = signed.registry.add_model(perturbed(digits_model_file, tmp_path / "digits.safetensors"), sign_with=signed.key)
    assert v2.version == 2 and v2.name == name
    roles = {p.role: p.id for p in signed.registry.manifest(v2).parents}
    assert roles == {"previous": signed.model_id, "dataset": signed.dataset_id}
    assert signed.registry.resolve(name).id == v2.id
    assert signed.registry.resolve(f"{name}@1").id == signed.model_id
    assert signed.registry.verify(v2.id, signed.trust).ok


def test_a_hardened_model_records_its_parent_method_and_privacy_budget(
    signed: Signed, digits_model_file: Path, tmp_path: Path
) -> None:
    """The card `bastion harden` writes names the file it was hardened from; registration links that model."""
    zoo = load_model(digits_model_file)
    card = dataclasses.replace(
        zoo.card,
        name=zoo.card.name + "-dp-sgd",
        training={
            "method": "dp-sgd",
            "settings": {"epsilon": 3.0, "seed": 0},
            "privacy": {"epsilon": 2.97, "delta": 1e-5, "accountant": "prv"},
            "hardened_from": {"file": digits_model_file.name, "sha256": zoo.card.weights_sha256},
            "history": [{"epoch": 1}],
        },
    )
    out = tmp_path / "hardened.safetensors"
    save_model(zoo.classifier.module, card, out)
    row = signed.registry.add_model(out)
    m = signed.registry.manifest(row)
    assert {p.role: p.id for p in m.parents} == {"dataset": signed.dataset_id, "model": signed.model_id}
    assert m.transformation.name == "harden" and m.transformation.settings["method"] == "dp-sgd"
    assert m.privacy == {"epsilon": 2.97, "delta": 1e-5, "accountant": "prv"}
    assert "history" not in m.training
    assert m.transformation.versions["bastion"]
    tree = signed.registry.lineage(row.id)
    assert {p.row.id for p in tree.parents} == {signed.dataset_id, signed.model_id}
    assert any(c.id == row.id for c, _ in signed.registry.children(signed.model_id))


def test_a_cleaned_dataset_links_its_source_and_keeps_its_cleaning_record(signed: Signed, tmp_path: Path) -> None:
    from tests.cli._run import run_cli

    d = load_dataset("digits")
    x = np.concatenate([d.x_train.numpy(), d.x_train.numpy()[:40]])
    y = np.concatenate([d.y_train.numpy(), d.y_train.numpy()[:40]])
    src = tmp_path / "dup.npz"
    np.savez(src, x_train=x, y_train=y, x_test=d.x_test.numpy(), y_test=d.y_test.numpy())
    ran = run_cli("data", "clean", str(src), "--checks", "duplicates", "--out", str(tmp_path / "clean.npz"))
    assert ran.returncode == 0, ran.stderr
    with pytest.raises(ArtifactError, match="the dataset it was cleaned from"):
        signed.registry.add_dataset(tmp_path / "clean.npz")
    source = signed.registry.add_dataset(src)
    cleaned = signed.registry.add_dataset(tmp_path / "clean.npz")
    m = signed.registry.manifest(cleaned)
    assert [(p.role, p.id) for p in m.parents] == [("source", source.id)]
    assert m.transformation.name == "clean" and m.cleaning is not None and m.cleaning["removed"] >= 40
    assert {f.path for f in m.files} == {"clean.npz", "clean.cleaning.json"}


def test_a_report_links_the_model_it_assessed_and_a_model_carries_its_verdict(
    signed: Signed, digits_model_file: Path, tmp_path: Path
) -> None:
    from tests.cli._run import run_cli

    pol = tmp_path / "policy.yaml"
    pol.write_text(
        "name: tiny\nsamples: 64\nattacks:\n  - {attack: fgsm, norm: linf, eps: [0.05]}\n"
        "thresholds:\n  - {attack: fgsm-linf, eps: 0.05, min: 0.0}\n"
    )
    ran = run_cli("assess", str(digits_model_file), "--policy", str(pol), "--out", str(tmp_path / "report"))
    assert ran.returncode == 0, ran.stdout + ran.stderr
    report = signed.registry.add_report(tmp_path / "report")
    m = signed.registry.manifest(report)
    assert [(p.role, p.id) for p in m.parents] == [("assessed", signed.model_id)]
    assert m.assessment is not None and m.assessment["verdict"] == "pass" and m.assessment["policy"] == "tiny"
    other = perturbed(digits_model_file, tmp_path / "other.safetensors", name="other")
    with pytest.raises(ConfigError, match="is of a model with sha256"):
        signed.registry.add_model(other, assessment=tmp_path / "report")


def test_export_copies_files_manifest_and_signature(signed: Signed, tmp_path: Path) -> None:
    out = signed.registry.export(signed.model_id, tmp_path / "out")
    names = {p.name for p in out.iterdir()}
    assert MANIFEST_FILE in names and any(n.endswith(".safetensors") for n in names)
    assert (out.parent / f"{out.name}.sig").is_file()
    from bastion.registry.signing import verify

    signer, problems = verify(out, out.parent / f"{out.name}.sig", signed.trust)
    assert problems == [] and signer


def test_a_users_own_models_and_data_register_with_explicit_lineage(
    signed: Signed, user_models: dict[str, Path], digits, tmp_path: Path
) -> None:
    """ONNX, torch.export, TorchScript and skops files carry no Bastion card: their lineage is given by the user."""
    np.savez(tmp_path / "mine.npz", x=digits.x_train.numpy(), y=digits.y_train.numpy())
    data = signed.registry.add_dataset(tmp_path / "mine.npz", sign_with=signed.key)
    for fmt in ("onnx", "pt2", "torchscript", "skops"):
        row = signed.registry.add_model(
            user_models[fmt], name=f"mine-{fmt}", parents=[f"dataset={data.id[:10]}"], sign_with=signed.key
        )
        m = signed.registry.manifest(row)
        assert [(p.role, p.id) for p in m.parents] == [("dataset", data.id)]
        assert m.dataset_digest is None and m.extra["primary"] == user_models[fmt].name
        assert signed.registry.verify(row.id, signed.trust).ok
    with pytest.raises(ArtifactError, match="Bastion registers no pickle"):
        signed.registry.add_model(user_models["torch-save"])
    from bastion.errors import UnsafeArtifactError

    with pytest.raises(UnsafeArtifactError, match="unsafe pickle"):
        signed.registry.add_model(user_models["pickle"])
