"""Verification refuses every kind of tampering, each with its reason, and passes an untouched artifact."""

from __future__ import annotations

import json
import shutil

import pytest

from bastion.errors import ArtifactError, ConfigError, UnknownNameError
from bastion.registry import Registry, TrustPolicy
from bastion.registry.manifest import MANIFEST_FILE

from .conftest import Signed


def test_untouched_artifacts_verify_with_their_signer(signed: Signed) -> None:
    for ref in (signed.dataset_id, signed.model_id):
        v = signed.registry.verify(ref, signed.trust)
        assert v.ok, v.problems
        assert v.checked == ("manifest", "files", "lineage", "signature")
        assert v.signer == signed.registry.resolve(ref).signer


def test_one_flipped_byte_in_the_weights_fails(signed: Signed) -> None:
    folder = signed.registry.path(signed.model_id)
    weights = next(folder.glob("*.safetensors"))
    raw = bytearray(weights.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    weights.write_bytes(bytes(raw))
    v = signed.registry.verify(signed.model_id, signed.trust)
    assert not v.ok
    assert any(f"file {weights.name} changed" in p for p in v.problems)
    assert any("differ from what was signed" in p and weights.name in p for p in v.problems)


def test_an_added_file_fails(signed: Signed) -> None:
    (signed.registry.path(signed.model_id) / "extra.py").write_text("print('hi')\n")
    v = signed.registry.verify(signed.model_id, signed.trust)
    assert any("extra.py was added" in p for p in v.problems)


def test_a_dotfile_that_model_signing_ignores_is_still_caught(signed: Signed) -> None:
    (signed.registry.path(signed.model_id) / ".gitattributes").write_text("* filter=evil\n")
    v = signed.registry.verify(signed.model_id, signed.trust)
    assert any(".gitattributes was added" in p for p in v.problems)


def test_a_removed_file_fails(signed: Signed) -> None:
    card = next(p for p in signed.registry.path(signed.model_id).glob("*.json") if p.name != MANIFEST_FILE)
    card.unlink()
    v = signed.registry.verify(signed.model_id, signed.trust)
    assert any(f"file {card.name} is missing" in p for p in v.problems)


def test_another_signers_key_is_an_unknown_signer(signed: Signed) -> None:
    v = signed.registry.verify(signed.model_id, TrustPolicy.from_keys([signed.other_public]))
    assert not v.ok
    assert any("unknown key" in p for p in v.problems)


def test_a_signature_swapped_for_another_signers_fails_even_when_that_key_is_trusted(signed: Signed) -> None:
    """An attacker re-signs a tampered artifact with their own key: trusted keys decide, not the bundle."""
    from bastion.registry.signing import sign

    folder = signed.registry.path(signed.model_id)
    weights = next(folder.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")
    sign(folder, signed.registry.store.signature(signed.model_id), signed.other_key)  # attacker's own signature
    v = signed.registry.verify(signed.model_id, signed.trust)
    assert any("unknown key" in p for p in v.problems)
    assert any(f"file {weights.name} changed" in p for p in v.problems)


def test_editing_the_lineage_in_a_manifest_fails_with_the_reason(signed: Signed) -> None:
    mf = signed.registry.path(signed.model_id) / MANIFEST_FILE
    d = json.loads(mf.read_bytes())
    d["dataset_digest"] = "f" * 64  # claim other training data
    d["parents"] = [{"id": "e" * 64, "kind": "dataset", "role": "dataset"}]
    mf.write_bytes(json.dumps(d, sort_keys=True, separators=(",", ":")).encode())
    v = signed.registry.verify(signed.model_id, signed.trust)
    assert any("was edited after registration" in p for p in v.problems)
    assert any(
        "dataset digest ffffffffffffffff… which is not in the registry" in p.replace(",", "") for p in v.problems
    )
    assert any("eeeeeeeeeeeeeeee… (dataset), which is not in the registry" in p for p in v.problems)
    assert any(f"{MANIFEST_FILE}" in p and "differ from what was signed" in p for p in v.problems)


def test_a_missing_signature_and_no_trust_are_failures_not_passes(signed: Signed) -> None:
    signed.registry.store.signature(signed.model_id).unlink()
    v = signed.registry.verify(signed.model_id, signed.trust)
    assert not v.ok and any("no signature" in p for p in v.problems)
    v2 = signed.registry.verify(signed.dataset_id, TrustPolicy())
    assert not v2.ok and any("no trusted keys" in p for p in v2.problems)
    content_only = signed.registry.verify(signed.model_id, None, require_signature=False)
    assert content_only.ok and not content_only.signature_checked and "signature" not in content_only.checked


def test_a_deleted_parent_dataset_breaks_the_models_lineage(signed: Signed) -> None:
    shutil.rmtree(signed.registry.path(signed.dataset_id))
    v = signed.registry.verify(signed.model_id, signed.trust)
    assert any("which is not in the registry" in p for p in v.problems)


def test_a_model_whose_training_data_is_not_registered_is_refused(tmp_path, digits_model_file) -> None:
    reg = Registry.init(tmp_path / "r")
    with pytest.raises(ArtifactError, match="register it first"):
        reg.add_model(digits_model_file)
    assert reg.rows() == []


def test_bad_references_and_folders_say_what_to_do(signed: Signed, tmp_path) -> None:
    with pytest.raises(UnknownNameError, match="no artifact 'nope'"):
        signed.registry.resolve("nope")
    with pytest.raises(UnknownNameError, match="has no version 7"):
        signed.registry.resolve("digits@7")
    assert signed.registry.resolve(signed.model_id[:10]).id == signed.model_id
    with pytest.raises(ConfigError, match="not a Bastion registry"):
        Registry.open(tmp_path)
    with pytest.raises(ConfigError, match="already a Bastion registry"):
        Registry.init(signed.root)


def test_signing_reuses_bastions_digests_and_stays_interoperable(signed: Signed) -> None:
    """Each byte is hashed once (Bastion's digests feed model-signing), and the bundle still verifies with
    model-signing's own hashing and its public API, as any other OpenSSF model-signing verifier would."""
    import model_signing

    from bastion.registry.digest import digest_tree
    from bastion.registry.signing import _Digests, _precomputed

    folder = signed.registry.path(signed.model_id)
    assert isinstance(_precomputed(digest_tree(folder)), _Digests)
    model_signing.verifying.Config().use_elliptic_key_verifier(public_key=signed.public).verify(
        folder, signed.registry.store.signature(signed.model_id)
    )


def test_the_index_can_live_in_postgresql(tmp_path, keys, digits_model_file, postgres_url) -> None:
    """The same registry with its index in PostgreSQL (the replicas' database): add, resolve, verify, lineage."""
    from bastion.registry import SigningKey

    key, pub, _, _ = keys
    reg = Registry.init(tmp_path / "r", index_url=postgres_url)
    try:
        reg.add_dataset("digits", sign_with=SigningKey(key))
        model = reg.add_model(digits_model_file, sign_with=SigningKey(key))
        assert reg.verify(model.id, TrustPolicy.from_keys([pub])).ok
        assert [p.row.name for p in reg.lineage(model.id).parents] == ["digits"]
    finally:
        reg.close()
    with pytest.raises(ConfigError, match="is not a database URL"):
        Registry.init(tmp_path / "bad", index_url="not a url")
