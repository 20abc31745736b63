"""The registry of streaming monitors: each kind brings its settings, how to build it and the playbook that answers
its alerts. The gateway's configuration, its monitor set and its incident playbooks all come from here, so adding a
monitor is one module, one ``MONITORS.add`` line and one test (tests/monitors/contracts)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict
from torch import Tensor

from bastion._registry import Registry
from bastion.monitors.base import Monitor


class MonitorSettings(BaseModel):
    """Base of a monitor's settings in the gateway's YAML: strict, so a typo is an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    enabled: bool = True


@dataclass(frozen=True)
class MonitorKind:
    """A registered monitor: ``build(settings, clean_inputs, clean_probabilities)`` makes one for a served model,
    calibrated on inputs of its own data that clients are not expected to send."""

    name: str
    settings: type[MonitorSettings]
    build: Callable[[Any, Tensor, Tensor], Monitor]
    playbook_title: str
    playbook_steps: tuple[str, ...]


MONITORS: Registry[MonitorKind] = Registry("monitor")
