"""Where Bastion keeps what it trains once and reuses (similarity encoders, detectors' autoencoders)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """$BASTION_CACHE_DIR, else $XDG_CACHE_HOME/bastion, else ~/.cache/bastion."""
    env = os.environ.get("BASTION_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "bastion"
