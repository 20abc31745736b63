"""Verified loading, checkpoint conversion and import."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bastion.errors import ArtifactError, IntegrityError, UnsafeArtifactError
from bastion.models.zoo import load_model
from bastion.registry import convert_checkpoint, import_model, load_verified

from .conftest import Signed

ARCH = "tests.conftest:digits_cnn_factory"


def test_a_verified_model_loads_and_predicts_like_the_original(signed: Signed, digits_model_file: Path, digits) -> None:
    got = load_verified(signed.registry, signed.model_id, signed.trust)
    assert got.verification.ok and got.loaded.format == "bastion-safetensors"
    want = load_model(digits_model_file).classifier.predict_logits(digits.x_test[:32])
    assert torch.equal(got.loaded.classifier.predict_logits(digits.x_test[:32]), want)


def test_a_tampered_model_is_not_loaded(signed: Signed) -> None:
    weights = next(signed.registry.path(signed.model_id).glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-4] + b"\x00\x00\x80\x7f")
    with pytest.raises(IntegrityError, match="failed verification") as e:
        load_verified(signed.registry, signed.model_id, signed.trust)
    assert any("changed" in p for p in e.value.problems)


def test_a_clean_torch_checkpoint_converts_and_loads_with_its_arch(
    signed: Signed, digits_model_file: Path, digits, tmp_path: Path
) -> None:
    module = load_model(digits_model_file).classifier.module
    ckpt = tmp_path / "legacy.pt"
    torch.save({"state_dict": module.state_dict(), "epoch": 3}, ckpt)
    with pytest.raises(ArtifactError, match="add --convert"):
        import_model(signed.registry, ckpt)
    row, scan = import_model(signed.registry, ckpt, convert=True, arch=ARCH, sign_with=signed.key)
    assert scan.verdict == "safe"
    m = signed.registry.manifest(row)
    assert m.transformation.name == "convert" and m.extra["arch"] == ARCH
    assert m.transformation.settings["source"] == "legacy.pt" and m.transformation.settings["scan"]["verdict"] == "safe"
    from bastion.models.formats import SpecHints

    got = load_verified(signed.registry, row.id, signed.trust, hints=SpecHints.from_spec(digits.spec))
    with torch.no_grad():
        want = module.eval()(digits.x_test[:16])
    assert torch.allclose(got.loaded.classifier.predict_logits(digits.x_test[:16]), want, atol=1e-6)


def test_import_refuses_a_malicious_checkpoint_even_with_convert(signed: Signed, tmp_path: Path) -> None:
    import os

    class Evil:
        def __reduce__(self) -> tuple[object, ...]:
            return (os.system, ("true",))

    bad = tmp_path / "bad.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "x": Evil()}, bad)
    before = signed.registry.rows()
    with pytest.raises(UnsafeArtifactError, match="malicious pickle"):
        import_model(signed.registry, bad, convert=True)
    assert signed.registry.rows() == before


def test_conversion_needs_a_state_dict_of_tensors(tmp_path: Path) -> None:
    p = tmp_path / "notes.pt"
    torch.save({"lr": 0.1, "notes": "hi"}, p)
    with pytest.raises(ArtifactError, match="not a state dict of tensors"):
        convert_checkpoint(p, tmp_path / "out.safetensors")
    with pytest.raises(ArtifactError, match=r"written as \.safetensors"):
        convert_checkpoint(p, tmp_path / "out.bin")


def test_weights_that_do_not_fit_the_arch_are_refused_at_import(signed: Signed, tmp_path: Path) -> None:
    ckpt = tmp_path / "lin.pt"
    torch.save(torch.nn.Linear(3, 2).state_dict(), ckpt)
    with pytest.raises(ArtifactError, match="do not fit the module"):
        import_model(signed.registry, ckpt, convert=True, arch=ARCH)


def test_importing_a_non_pickle_records_its_scan(signed: Signed, tmp_path: Path, digits_model_file: Path) -> None:
    from tests.registry.test_registry_versions import perturbed

    row, scan = import_model(signed.registry, perturbed(digits_model_file, tmp_path / "m.safetensors"))
    assert scan.verdict == "not-pickle"
    assert signed.registry.manifest(row).extra["scan"]["verdict"] == "not-pickle"
