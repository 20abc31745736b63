"""model-signing's certificate mode: an artifact signed with a code-signing certificate verifies against its root and
is refused under another root."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bastion.errors import ConfigError
from bastion.registry import Registry, SigningKey, TrustPolicy
from tests.cli._run import run_cli

_USAGE = dict(
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    encipher_only=False,
    decipher_only=False,
)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _builder(subject: str, issuer: x509.Name, public: object) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(public)  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
    )


def _root(cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _builder(cn, _name(cn), key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=False, key_cert_sign=True, crl_sign=True, **_USAGE), critical=True
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("pki")
    root_key, root = _root("Release Root")
    _, other = _root("Someone Else's Root")
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        _builder("release-bot", root.subject, leaf_key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False, **_USAGE), critical=True
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
        .sign(root_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    (d / "root.pem").write_bytes(root.public_bytes(pem))
    (d / "other.pem").write_bytes(other.public_bytes(pem))
    (d / "leaf.pem").write_bytes(leaf.public_bytes(pem))
    (d / "leaf.key").write_bytes(
        leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return {p.name: p for p in d.iterdir()}


def test_certificate_signed_artifacts_verify_against_their_root_only(pki: dict[str, Path], tmp_path: Path) -> None:
    reg = Registry.init(tmp_path / "r")
    with pytest.raises(ConfigError, match="needs the certificate chain"):
        reg.add_dataset("digits", sign_with=SigningKey(pki["leaf.key"], certificate=pki["leaf.pem"]))
    key = SigningKey(pki["leaf.key"], certificate=pki["leaf.pem"], chain=(pki["root.pem"],))
    row = reg.add_dataset("digits", sign_with=key)
    assert row.signer is not None and row.signer.startswith("x509:")
    ok = reg.verify(row.id, TrustPolicy.from_keys([], [pki["root.pem"]]))
    assert ok.ok, ok.problems
    bad = reg.verify(row.id, TrustPolicy.from_keys([], [pki["other.pem"]]))
    assert any("does not chain to a trusted root" in p for p in bad.problems)
    assert not reg.verify(row.id, TrustPolicy()).ok
    with pytest.raises(ConfigError, match="is not a PEM certificate"):
        TrustPolicy.from_keys([], [pki["leaf.key"]])
    reg.close()


def test_the_cli_signs_and_verifies_with_certificates(pki: dict[str, Path], tmp_path: Path) -> None:
    r = str(tmp_path / "r")
    assert run_cli("registry", "init", r).returncode == 0
    added = run_cli(
        "registry",
        "add",
        "digits",
        "-r",
        r,
        "--sign",
        str(pki["leaf.key"]),
        "--sign-cert",
        str(pki["leaf.pem"]),
        "--sign-chain",
        str(pki["root.pem"]),
    )
    assert added.returncode == 0, added.stderr
    assert run_cli("registry", "verify", "-r", r, "--trust-chain", str(pki["root.pem"])).returncode == 0
    assert run_cli("registry", "verify", "-r", r, "--trust-chain", str(pki["other.pem"])).returncode == 1
