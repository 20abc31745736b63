"""API keys: made by a CSPRNG, shown once, stored as a keyed hash, compared in constant time, scoped, revocable.

A key reads ``bk_<key id>_<secret>``. The key id (public, 12 hex characters) finds the record; the secret (43
URL-safe characters, 256 bits) is checked against ``HMAC-SHA256(server secret, secret)`` with
``hmac.compare_digest``. Storing a keyed hash means a copy of the database alone does not let anyone test guesses:
they also need the server secret, which lives in its own file (mode 0600). Every request looks the key up, so a
revocation — by the admin API or by ``bastion keys revoke`` in another process — takes effect on the next request.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from bastion.errors import ConfigError, InputValidationError
from bastion.gateway.errors import GatewayError
from bastion.gateway.store.base import KeyRecord, KeyStore

_TOKEN = re.compile(r"^bk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")


class Scope(StrEnum):
    """What a key may do. ``admin`` implies the others."""

    PREDICT_LABELS = "predict:labels"
    PREDICT_SCORES = "predict:scores"
    ADMIN = "admin"
    ASSESSMENT = "assessment"  # a red-team key: its alerts are recorded but change no one's threat level


def parse_scopes(values: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Validate scope names; refuse unknown ones with the list of known ones."""
    known = [s.value for s in Scope]
    out: list[str] = []
    for v in values:
        if v not in known:
            raise InputValidationError(f"unknown scope {v!r}; choose from: {', '.join(known)}")
        if v not in out:
            out.append(v)
    if not out:
        raise InputValidationError(f"a key needs at least one scope; choose from: {', '.join(known)}")
    return tuple(out)


def load_secret(path: Path) -> bytes:
    """The server's HMAC secret, created (32 random bytes, mode 0600) on first use."""
    path = Path(path)
    if path.exists():
        data = path.read_bytes().strip()
        if len(data) < 32:
            raise ConfigError(f"server secret {path} is shorter than 32 bytes; delete it to make a new one")
        return data
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(secrets.token_hex(32).encode())
    return path.read_bytes().strip()


@dataclass(frozen=True)
class Principal:
    """An authenticated caller."""

    key_id: str
    name: str
    scopes: tuple[str, ...]
    created_at: float = 0.0

    def allows(self, scope: Scope) -> bool:
        return Scope.ADMIN.value in self.scopes or scope.value in self.scopes

    @property
    def assessment(self) -> bool:
        """A red-team key (only by its own scope: admin does not imply it)."""
        return Scope.ASSESSMENT.value in self.scopes


class AuthError(GatewayError):
    """Authentication failed or was not allowed (401 or 403, by its code)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)


class KeyManager:
    """Creates, verifies, lists and revokes API keys over a KeyStore."""

    def __init__(self, store: KeyStore, secret: bytes, *, grace_s: float | None = None) -> None:
        self.store = store
        self._secret = secret
        self.grace_s = grace_s  # fail-open: keys verified this recently still pass while the store is down
        self._verified: dict[str, tuple[str, Principal, float]] = {}  # key id -> (secret hash, principal, when)
        self.graced = 0  # requests let in on a remembered key while the store was down

    def _hash(self, secret_part: str) -> str:
        return hmac.new(self._secret, secret_part.encode(), hashlib.sha256).hexdigest()

    def create(self, name: str, scopes: list[str] | tuple[str, ...]) -> tuple[KeyRecord, str]:
        """Make a key; returns the stored record and the key itself, which is never stored or shown again."""
        if not isinstance(name, str) or not name.strip() or len(name) > 200:
            raise InputValidationError("a key needs a name of 1 to 200 characters (who or what uses it)")
        checked = parse_scopes(scopes)
        key_id = secrets.token_hex(6)
        secret_part = secrets.token_urlsafe(32)
        record = KeyRecord(key_id, name.strip(), checked, self._hash(secret_part), time.time())
        self.store.add_key(record)
        return record, f"bk_{key_id}_{secret_part}"

    def authenticate(self, token: str | None) -> Principal:
        """The caller behind a key, or AuthError(401) for a missing, malformed, unknown, wrong or revoked key."""
        if not token:
            raise AuthError("missing_key", "no API key: send 'Authorization: Bearer <key>'")
        m = _TOKEN.match(token)
        if m is None:
            raise AuthError("malformed_key", "malformed API key: expected 'bk_<12 hex>_<43 characters>'")
        key_id, secret_part = m.group(1), m.group(2)
        try:
            record = self.store.get_key(key_id)
        except Exception:  # the store is down: a key verified recently passes when fail-open allows it
            principal = self._remembered(key_id, secret_part)
            if principal is None:
                raise
            return principal
        expected = record.secret_hash if record is not None else self._hash("")  # same work for unknown ids
        if not hmac.compare_digest(expected, self._hash(secret_part)) or record is None:
            raise AuthError("invalid_key", "invalid API key")
        if not record.active:
            self._verified.pop(key_id, None)
            raise AuthError("revoked_key", "this API key has been revoked")
        principal = Principal(record.key_id, record.name, record.scopes, record.created_at)
        if self.grace_s is not None:
            if len(self._verified) >= 100_000 and key_id not in self._verified:
                self._verified.pop(next(iter(self._verified)))  # bounded: the oldest remembered key goes
            self._verified[key_id] = (record.secret_hash, principal, time.monotonic())
        return principal

    def _remembered(self, key_id: str, secret_part: str) -> Principal | None:
        if self.grace_s is None:
            return None
        seen = self._verified.get(key_id)
        if seen is None or time.monotonic() - seen[2] > self.grace_s:
            return None
        if not hmac.compare_digest(seen[0], self._hash(secret_part)):
            return None
        self.graced += 1
        return seen[1]

    def forget(self, key_id: str) -> None:
        """A key revoked (here or on another replica): never let it in on memory again."""
        self._verified.pop(key_id, None)

    @staticmethod
    def require(principal: Principal, scope: Scope) -> None:
        if not principal.allows(scope):
            raise AuthError("forbidden", f"this key lacks the '{scope.value}' scope")

    def revoke(self, key_id: str) -> bool:
        """Revoke a key; False if no active key has that id."""
        self.forget(key_id)
        return self.store.revoke_key(key_id, time.time())

    def list(self) -> list[KeyRecord]:
        return self.store.list_keys()
