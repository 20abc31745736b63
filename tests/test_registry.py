from __future__ import annotations

import pytest

from bastion._registry import Registry
from bastion.errors import ConfigError, UnknownNameError


def test_registry_register_get_and_errors() -> None:
    reg: Registry[int] = Registry("widget")
    reg.add("one", 1)
    assert reg.get("ONE") == 1
    assert "one" in reg and reg.names() == ["one"]
    with pytest.raises(ConfigError, match="already registered"):
        reg.add("one", 2)
    with pytest.raises(UnknownNameError, match="unknown widget 'two'; choose one of: one"):
        reg.get("two")
