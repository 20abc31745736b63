from __future__ import annotations

import pytest

from bastion import errors


@pytest.mark.parametrize(
    ("cls", "code"),
    [
        (errors.BastionError, 3),
        (errors.UserError, 2),
        (errors.InputValidationError, 2),
        (errors.ConfigError, 2),
        (errors.PolicyError, 2),
        (errors.UnknownNameError, 2),
        (errors.DatasetNotFoundError, 2),
        (errors.ArtifactError, 2),
        (errors.IntegrityError, 2),
        (errors.NoGradientError, 2),
        (errors.RemoteModelError, 3),
    ],
)
def test_each_error_knows_its_exit_code(cls: type[errors.BastionError], code: int) -> None:
    assert cls.exit_code == code
    assert issubclass(cls, errors.BastionError)


def test_problems_are_listed_one_per_line() -> None:
    e = errors.InputValidationError("invalid x", problems=["a is wrong", "b is wrong"])
    assert str(e) == "invalid x\n  - a is wrong\n  - b is wrong"
    assert e.problems == ("a is wrong", "b is wrong")


def test_unknown_name_error_prints_plainly() -> None:
    e = errors.UnknownNameError("unknown attack 'x'; choose one of: fgsm")
    assert str(e) == "unknown attack 'x'; choose one of: fgsm"  # not KeyError's repr with quotes
