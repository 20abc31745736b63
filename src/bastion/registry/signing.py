"""Signatures in the OpenSSF model-signing format, made and checked with the ``model-signing`` package.

A signature covers an artifact folder: model-signing hashes every file (sha256, file-level manifest), wraps the
manifest in an in-toto statement and signs it into a Sigstore bundle. Bastion uses its key-based ECDSA mode offline
(:func:`generate_keypair` makes a P-256 key pair in PEM); the certificate mode (a signing certificate and its chain)
is exposed through :class:`SigningKey`/:class:`TrustPolicy` for deployments that have a PKI. Sigstore's keyless
mode needs its public services, which no Bastion command reaches at run time; sign with ``model_signing`` directly
where a deployment has them, and Bastion verifies such a bundle with ``TrustPolicy(sigstore=...)``.

A signer is named by its fingerprint: the sha256 of its public key in PEM (SubjectPublicKeyInfo), the same hint
model-signing writes into the bundle, so "which key signed this" is answered before any cryptography runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bastion.errors import ArtifactError, ConfigError, IntegrityError
from bastion.registry.digest import FileDigest

log = logging.getLogger(__name__)


def _load_public(path: Path) -> object:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read public key {path}: {e.strerror}") from None
    try:
        key = serialization.load_pem_public_key(raw)
    except ValueError:
        raise ConfigError(
            f"{path} is not a PEM public key (-----BEGIN PUBLIC KEY-----); make a key pair with "
            "`bastion registry keygen` or export the public half with `openssl ec -pubout`"
        ) from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name not in ("secp256r1", "secp384r1", "secp521r1"):
        raise ConfigError(f"{path} is not an elliptic-curve key on P-256, P-384 or P-521 (what model signing uses)")
    return key


def fingerprint(public_key_pem: Path) -> str:
    """The signer id of a PEM public key: sha256 of its canonical PEM encoding (as model-signing records it)."""
    from cryptography.hazmat.primitives import serialization

    key = _load_public(public_key_pem)
    pem = key.public_bytes(  # type: ignore[attr-defined]
        encoding=serialization.Encoding.PEM, format=serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(pem).hexdigest()


def generate_keypair(private_path: Path, public_path: Path, *, password: str | None = None) -> str:
    """Write a new ECDSA P-256 key pair (PEM; the private key mode 0600, encrypted when ``password`` is given) and
    return its fingerprint. Refuses to overwrite an existing key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    for p in (private_path, public_path):
        if p.exists():
            raise ConfigError(f"{p} exists; Bastion never overwrites a key (move it away or choose another path)")
    key = ec.generate_private_key(ec.SECP256R1())
    encryption = serialization.BestAvailableEncryption(password.encode()) if password else serialization.NoEncryption()
    private_path.parent.mkdir(parents=True, exist_ok=True)
    public_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption))
    public_path.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return fingerprint(public_path)


@dataclass(frozen=True)
class SigningKey:
    """How to sign: an EC private key (PEM), optionally with a signing certificate and its chain (certificate mode)."""

    private_key: Path
    password: str | None = None
    certificate: Path | None = None
    chain: tuple[Path, ...] = ()

    def check(self) -> None:
        """Fail with one clear message when the key cannot be used (missing, not PEM, wrong curve, bad password)."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        try:
            raw = self.private_key.read_bytes()
        except OSError as e:
            raise ConfigError(f"cannot read signing key {self.private_key}: {e.strerror}") from None
        try:
            key = serialization.load_pem_private_key(raw, self.password.encode() if self.password else None)
        except TypeError:
            raise ConfigError(
                f"signing key {self.private_key} is encrypted; give its password (--password-env VAR)"
            ) from None
        except ValueError:
            raise ConfigError(
                f"{self.private_key} is not a PEM private key (or the password is wrong); make one with "
                "`bastion registry keygen`"
            ) from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ConfigError(f"{self.private_key} is not an elliptic-curve key; model signing needs P-256/384/521")
        if self.certificate is not None and not self.chain:
            raise ConfigError(
                "certificate mode needs the certificate chain up to the root the verifier trusts (--sign-chain)"
            )

    def config(self) -> object:
        import model_signing

        self.check()
        cfg = model_signing.signing.Config().set_hashing_config(_hashing())
        if self.certificate is not None:
            return cfg.use_certificate_signer(
                private_key=self.private_key, signing_certificate=self.certificate, certificate_chain=self.chain
            )
        return cfg.use_elliptic_key_signer(private_key=self.private_key, password=self.password)


def _hashing() -> Any:
    import model_signing

    # file-level sha256, the same digests as the Bastion manifest. model-signing skips .git* paths; the registry's
    # own digest comparison covers every file, so such a file added to an artifact is still caught.
    return model_signing.hashing.Config().use_file_serialization(hashing_algorithm="sha256")


class _Digests:
    """A model-signing hashing configuration that hands over digests Bastion already computed, so an artifact is read
    and hashed once, not once by Bastion and again by model-signing. The manifest it returns is exactly what
    model-signing's file-level sha256 serialization builds (same items, digests and serialization parameters); the
    only difference is that it covers every file, ``.git*`` ones included, where model-signing's own skips them."""

    def __init__(self, digests: Sequence[FileDigest]) -> None:
        self.digests = tuple(digests)

    def hash(self, model_path: Path, *, files_to_hash: object = None) -> Any:
        from pathlib import PurePosixPath

        from model_signing import manifest as msm
        from model_signing._hashing.hashing import Digest

        items = [
            msm.FileManifestItem(path=PurePosixPath(d.path), digest=Digest("sha256", bytes.fromhex(d.sha256)))
            for d in self.digests
        ]
        return msm.Manifest(Path(model_path).name, items, msm._FileSerialization("sha256"))

    def add_ignored_paths(self, **_: object) -> None:  # Bastion signs no manifest with ignored paths
        return None


def _precomputed(digests: Sequence[FileDigest] | None) -> Any:
    """The hashing configuration to sign or verify with: Bastion's digests when given and model-signing's internals
    are the ones this was written against, else model-signing's own hashing."""
    if digests is None:
        return _hashing()
    try:
        from model_signing import manifest as msm
        from model_signing._hashing.hashing import Digest  # noqa: F401

        if msm._FileSerialization("sha256").serialization_parameters != {
            "method": "files",
            "hash_type": "sha256",
            "allow_symlinks": False,
        }:
            return _hashing()
    except (ImportError, AttributeError, TypeError):  # a model-signing release that changed its internals
        return _hashing()
    return _Digests(digests)


def sign(folder: Path, signature: Path, key: SigningKey, digests: Sequence[FileDigest] | None = None) -> str:
    """Sign every file of ``folder`` into ``signature`` (a Sigstore bundle, the OpenSSF model-signing format); returns
    the signer's fingerprint. ``digests``: the sha256 of every file of ``folder``, already computed (else hashed)."""
    cfg = key.config()
    cfg.set_hashing_config(_precomputed(digests))  # type: ignore[attr-defined]
    signature.parent.mkdir(parents=True, exist_ok=True)
    try:
        cfg.sign(folder, signature)  # type: ignore[attr-defined]
    except (ValueError, OSError) as e:
        raise ArtifactError(f"signing {folder} failed: {e}") from None
    return signer_of(signature)


def signer_of(signature: Path) -> str:
    """Who signed a model-signing bundle: the public-key fingerprint it names (key mode), or ``x509:`` and the sha256
    of the signing certificate (certificate mode)."""
    try:
        bundle = json.loads(signature.read_text())
    except (OSError, ValueError) as e:
        raise IntegrityError(f"signature {signature.name} cannot be read: {e}") from None
    material = bundle.get("verificationMaterial") or {}
    hint = (material.get("publicKey") or {}).get("hint")
    if hint:
        return str(hint)
    chain = (material.get("x509CertificateChain") or {}).get("certificates") or []
    leaf = chain[0].get("rawBytes") if chain else (material.get("certificate") or {}).get("rawBytes")
    if leaf:
        import base64

        try:
            return "x509:" + hashlib.sha256(base64.b64decode(leaf)).hexdigest()
        except ValueError:
            raise IntegrityError(f"signature {signature.name} holds a malformed certificate") from None
    raise IntegrityError(f"signature {signature.name} names no public key or certificate")


@dataclass(frozen=True)
class TrustPolicy:
    """Whom to believe: PEM public keys (key mode), certificate chains (certificate mode), or a Sigstore identity."""

    public_keys: tuple[Path, ...] = ()
    certificate_chain: tuple[Path, ...] = ()
    sigstore: tuple[str, str] | None = None  # (identity, OIDC issuer)
    fingerprints: dict[str, Path] = field(default_factory=dict, compare=False)

    @classmethod
    def from_keys(cls, keys: list[Path] | tuple[Path, ...], chain: list[Path] | tuple[Path, ...] = ()) -> TrustPolicy:
        """Trust these public keys (each a PEM file, or a folder of ``*.pub``/``*.pem`` files) and certificates
        chaining to ``chain`` (PEM root and intermediate certificates)."""
        for c in chain:
            if not c.is_file() or b"BEGIN CERTIFICATE" not in c.read_bytes()[:4096]:
                raise ConfigError(f"{c} is not a PEM certificate (-----BEGIN CERTIFICATE-----) to trust")
        paths: list[Path] = []
        for k in keys:
            if k.is_dir():
                paths += sorted(p for p in k.iterdir() if p.suffix in (".pub", ".pem"))
            else:
                paths.append(k)
        if not paths and keys:
            raise ConfigError(f"no public keys (*.pub, *.pem) in {', '.join(map(str, keys))}")
        return cls(
            public_keys=tuple(paths), certificate_chain=tuple(chain), fingerprints={fingerprint(p): p for p in paths}
        )

    @property
    def empty(self) -> bool:
        return not self.public_keys and not self.certificate_chain and self.sigstore is None


def verify(
    folder: Path, signature: Path, trust: TrustPolicy, digests: Sequence[FileDigest] | None = None
) -> tuple[str, list[str]]:
    """Check ``signature`` over ``folder`` against ``trust``: returns (signer, problems); no problems means verified.

    Problems name the cause: an unknown signer (a key not in the trust policy), a bad signature, or model-signing's
    own file comparison (changed digest, missing or extra file). ``digests``: the sha256 of every file of ``folder``
    as it is on disk now, when the caller has computed them (else model-signing hashes the folder)."""
    import model_signing

    if not signature.is_file():
        return "", [f"no signature ({signature.name} is missing)"]
    if trust.empty:
        return "", ["no trusted keys given: a signature can only be verified against keys you trust (--trust KEY)"]
    signer = signer_of(signature)
    cfg = model_signing.verifying.Config().set_hashing_config(_precomputed(digests))
    if trust.sigstore is not None:
        cfg = cfg.use_sigstore_verifier(identity=trust.sigstore[0], oidc_issuer=trust.sigstore[1])
    elif signer.startswith("x509:"):
        if not trust.certificate_chain:
            return signer, ["signed with a certificate, but no certificate chain is trusted (--trust-chain)"]
        cfg = cfg.use_certificate_verifier(certificate_chain=trust.certificate_chain)
    else:
        key = trust.fingerprints.get(signer)
        if key is None:
            return signer, [f"signed by an unknown key {signer[:16]}… (not among the {len(trust.public_keys)} trusted)"]
        cfg = cfg.use_elliptic_key_verifier(public_key=key)
    try:
        cfg.verify(folder, signature)
    except ValueError as e:
        text = str(e)
        if text.startswith("Signature mismatch"):
            import re

            # model-signing lists "Hash mismatch for 'f': Expected ..., Actual ..." and extra/missing files; keep
            # what names the file, not the raw digests
            diffs = re.findall(
                r"(Hash mismatch for '[^']*'|Extra files found in [^\]\"]*|Missing files in [^\]\"]*)", text
            )
            return signer, [f"the files differ from what was signed ({'; '.join(diffs) or text})"]
        return signer, [f"the signature does not verify: {text}"]
    except Exception as e:  # model-signing and its crypto backends raise many kinds on a forged bundle
        if type(e).__name__ == "X509StoreContextError":
            return signer, [f"the signing certificate does not chain to a trusted root ({e})"]
        return signer, [f"the signature does not verify: {type(e).__name__}: {e}"]
    return signer, []
