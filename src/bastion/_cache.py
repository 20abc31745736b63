"""Where Bastion keeps what it trains once and reuses (similarity encoders, detectors' autoencoders)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from torch import Tensor

T = TypeVar("T")
log = logging.getLogger(__name__)


def cache_dir() -> Path:
    """$BASTION_CACHE_DIR, else $XDG_CACHE_HOME/bastion, else ~/.cache/bastion."""
    env = os.environ.get("BASTION_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "bastion"


def digest_path(kind: str, prefix: str, data: Tensor, settings: list[object]) -> Path:
    """The cache file for what is trained on ``data`` with ``settings`` (JSON-able values): a digest of both."""
    h = hashlib.sha256(data.float().contiguous().numpy().tobytes())
    h.update(json.dumps([list(data.shape), *settings], sort_keys=True).encode())
    return cache_dir() / kind / f"{prefix}{h.hexdigest()[:32]}.safetensors"


def load_or_train(path: Path, what: str, load: Callable[[Path], T], train: Callable[[], T]) -> T:
    """``load(path)`` when a cached copy exists and reads back (a damaged one is retrained, never trusted), else
    ``train()`` and save it there (its ``save(path)``); a cache that cannot be written is a warning, not an error."""
    if path.is_file():
        try:
            return load(path)
        except Exception as e:
            log.warning("retraining the %s: cached %s unreadable (%s)", what, path, e)
    made = train()
    try:
        made.save(path)  # type: ignore[attr-defined]
    except OSError as e:
        log.warning("could not cache the %s at %s: %s", what, path, e)
    return made
