"""A registry with the digits data and the session's digits model, signed by a key made for the test."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from bastion.registry import Registry, SigningKey, TrustPolicy, generate_keypair


@dataclass(frozen=True)
class Signed:
    registry: Registry
    root: Path
    key: SigningKey
    trust: TrustPolicy
    public: Path
    other_key: SigningKey
    other_public: Path
    dataset_id: str
    model_id: str


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, Path]:
    d = tmp_path_factory.mktemp("keys")
    generate_keypair(d / "signer.key", d / "signer.pub")
    generate_keypair(d / "other.key", d / "other.pub")
    return d / "signer.key", d / "signer.pub", d / "other.key", d / "other.pub"


@pytest.fixture()
def signed(tmp_path: Path, keys: tuple[Path, Path, Path, Path], digits_model_file: Path) -> Signed:
    """A fresh registry per test (tests tamper with it): digits data and the digits model, both signed."""
    key, pub, other, other_pub = keys
    reg = Registry.init(tmp_path / "registry")
    data = reg.add_dataset("digits", sign_with=SigningKey(key))
    model = reg.add_model(digits_model_file, sign_with=SigningKey(key))
    yield Signed(
        reg,
        tmp_path / "registry",
        SigningKey(key),
        TrustPolicy.from_keys([pub]),
        pub,
        SigningKey(other),
        other_pub,
        data.id,
        model.id,
    )
    reg.close()
