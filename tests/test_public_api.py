"""The curated public API: every name in __all__ exists, and every public name is in __all__."""

from __future__ import annotations

import types

import bastion


def test_all_names_exist() -> None:
    missing = [n for n in bastion.__all__ if not hasattr(bastion, n)]
    assert missing == []


def test_no_public_name_outside_all() -> None:
    public = {
        n
        for n, v in vars(bastion).items()
        if not n.startswith("_") and not isinstance(v, types.ModuleType) and n != "annotations"
    }
    assert public - set(bastion.__all__) == set()


def test_all_is_sorted_and_unique() -> None:
    assert len(set(bastion.__all__)) == len(bastion.__all__)
