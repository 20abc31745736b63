"""How long-running library work reports progress without printing: the CLI plugs a rich bar in."""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    """Receives progress of long work; ``task`` starts a unit of ``total`` steps, ``advance`` moves it."""

    def task(self, description: str, total: int) -> None: ...

    def advance(self, steps: int = 1) -> None: ...


class NullProgress:
    """Discards progress (the library default)."""

    def task(self, description: str, total: int) -> None:
        return None

    def advance(self, steps: int = 1) -> None:
        return None
