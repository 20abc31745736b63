"""Bastion's one exception tree.

Every error a user can cause is a :class:`BastionError`; each class carries the exit code the CLI uses, so the
mapping from failure to exit status lives in one place::

    BastionError (exit 3: an internal or environment failure)
    ├── UserError (exit 2: the caller must change something)
    │   ├── InputValidationError        tensors / arrays with a wrong shape, dtype, range, NaN ...
    │   ├── ConfigError                 bad arguments to a constructor or a function
    │   │   └── PolicyError             a malformed assess policy file
    │   ├── UnknownNameError            an attack, dataset or architecture name not in its registry
    │   ├── DatasetNotFoundError        data files missing on disk (names the install command)
    │   └── ArtifactError               a model file or card that cannot be used
    │       ├── IntegrityError          weights whose sha256 does not match their card; an artifact that fails
    │       │                           verification against its registry manifest and signature
    │       └── UnsafeArtifactError     a pickle that can run code when loaded (refused before anything loads it)
    ├── RemoteModelError (exit 3)       an HTTP model endpoint that failed, timed out or answered garbage
    └── GatewayError (bastion.gateway.errors; exit 2 for a 4xx, 3 for a 5xx)  a request the gateway refuses, with
                                        its HTTP status: the one place statuses are decided

Validation collects every problem it finds and raises once; ``problems`` holds them one per line.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

__all__ = [
    "ArtifactError",
    "BastionError",
    "ConfigError",
    "DatasetNotFoundError",
    "InputValidationError",
    "IntegrityError",
    "NoGradientError",
    "PolicyError",
    "RemoteModelError",
    "UnknownNameError",
    "UnsafeArtifactError",
    "UserError",
]


class BastionError(Exception):
    """Base of every error Bastion raises on purpose."""

    exit_code: ClassVar[int] = 3

    def __init__(self, message: str, *, problems: Iterable[str] = ()) -> None:
        self.problems: tuple[str, ...] = tuple(problems)
        full = message
        if self.problems:
            full = message + "\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(full)
        self.message = message


class UserError(BastionError):
    """The caller asked for something that cannot work; the message says what to change."""

    exit_code: ClassVar[int] = 2


class InputValidationError(UserError, ValueError):
    """Input data (tensors, arrays, labels) failed validation."""


class ConfigError(UserError, ValueError):
    """A setting passed to a constructor or function is out of its allowed range or of the wrong type."""


class PolicyError(ConfigError):
    """An assess policy file is malformed."""


class NoGradientError(ConfigError):
    """The model or detector offers no gradient where the work asked needs one (an adaptive attack, training)."""


class UnknownNameError(UserError, KeyError):
    """A name that is not registered; the message lists the registered ones."""

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return self.args[0] if self.args else ""


class DatasetNotFoundError(UserError, FileNotFoundError):
    """Dataset files are missing; the message names how to install them."""


class ArtifactError(UserError):
    """A model artifact (weights or card) is missing, malformed or inconsistent."""


class IntegrityError(ArtifactError):
    """An artifact's content hash does not match the hash recorded for it."""


class UnsafeArtifactError(ArtifactError):
    """A serialized artifact (a pickle, a torch.save checkpoint, joblib) that can run code when it is loaded."""


class RemoteModelError(BastionError):
    """A model behind HTTP failed: timeout, HTTP error status, or a malformed answer."""

    exit_code: ClassVar[int] = 3
