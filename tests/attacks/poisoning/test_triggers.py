from __future__ import annotations

import pytest
import torch

from bastion.attacks.poisoning import BadNets, BlendTrigger, LabelFlip, PatchTrigger
from bastion.errors import ConfigError
from bastion.types import ModelSpec

IMG = ModelSpec(input_shape=(1, 8, 8), num_classes=10, bounds=(0.0, 1.0))
TAB = ModelSpec(input_shape=(30,), num_classes=2, bounds=(0.0, 1.0))


def test_patch_lands_where_asked_with_the_pattern() -> None:
    x = torch.full((2, 1, 8, 8), 0.5)
    out = PatchTrigger(size=2, location="top-left", margin=0, pattern="checkerboard").apply(x, IMG)
    assert torch.equal(out[0, 0, :2, :2], torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    assert bool((out[:, :, 2:, :] == 0.5).all()) and bool((out[:, :, :, 2:] == 0.5).all())
    corner = PatchTrigger(size=3).apply(x, IMG)  # bottom-right, 1 pixel from the border
    assert bool((corner[:, :, 4:7, 4:7] != 0.5).any()) and bool((corner[:, :, 7, :] == 0.5).all())
    assert torch.equal(PatchTrigger(size=3).mask(IMG)[0, 4:7, 4:7], torch.ones(3, 3))


def test_blend_mixes_the_whole_input_at_alpha() -> None:
    x = torch.zeros(3, 1, 8, 8)
    out = BlendTrigger(alpha=0.2, pattern="checkerboard").apply(x, IMG)
    assert torch.allclose(out[0, 0, 0, :2], torch.tensor([0.2, 0.0]))
    tab = BlendTrigger(alpha=0.1).apply(torch.ones(4, 30), TAB)
    assert tab.shape == (4, 30) and float(tab.min()) >= 0.9


@pytest.mark.parametrize(
    ("trigger", "message"),
    [
        (PatchTrigger(size=9), "larger than the 8x8 image"),
        (PatchTrigger(size=0), "size must be"),
        (PatchTrigger(size=3, location=(6, 6)), "does not fit"),
        (PatchTrigger(pattern="plaid"), "pattern must be one of"),
        (PatchTrigger(location="middle"), "location must be one of"),
    ],
)
def test_bad_patch_triggers_say_what_is_wrong(trigger: PatchTrigger, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        trigger.apply(torch.zeros(1, 1, 8, 8), IMG)
    assert message in " ".join([str(e.value), *e.value.problems])


def test_patch_on_tabular_data_points_to_blending() -> None:
    problems = BadNets(trigger=PatchTrigger()).problems(TAB)
    assert any("blended trigger" in p for p in problems)
    assert BlendTrigger(alpha=1.5).problems(TAB) == ["blend alpha must be in (0, 1), got 1.5"]


def test_label_flip_settings_are_checked() -> None:
    assert LabelFlip(mode="targeted", source=1, target=1).problems(IMG) == ["source and target must differ, both are 1"]
    assert "class index" in LabelFlip(mode="targeted", source=1, target=12).problems(IMG)[0]
    assert LabelFlip(mode="sideways").problems(IMG)


def test_targeted_flip_moves_only_source_labels_to_target(digits) -> None:  # type: ignore[no-untyped-def]
    ps = LabelFlip(mode="targeted", source=1, target=7).poison(
        digits.x_train, digits.y_train, digits.spec, rate=0.02, generator=torch.Generator().manual_seed(0)
    )
    assert bool((digits.y_train[ps.poisoned] == 1).all()) and bool((ps.y[ps.poisoned] == 7).all())
    with pytest.raises(ConfigError, match="lower the rate"):
        LabelFlip(mode="targeted", source=1, target=7).poison(
            digits.x_train, digits.y_train, digits.spec, rate=0.5, generator=torch.Generator().manual_seed(0)
        )
