"""Shared by the training tests: a progress sink that interrupts a run, as Ctrl-C or a killed job would."""

from __future__ import annotations

from collections.abc import Callable

import pytest


class Interrupt:
    """A progress bar whose user presses Ctrl-C after ``after`` training steps."""

    def __init__(self, after: int) -> None:
        self.after, self.done = after, 0

    def task(self, description: str, total: int) -> None:
        return None

    def advance(self, steps: int = 1) -> None:
        self.done += steps
        if self.done > self.after:
            raise KeyboardInterrupt


@pytest.fixture
def interrupt_after() -> Callable[[int], Interrupt]:
    return Interrupt
