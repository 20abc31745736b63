from __future__ import annotations

from pathlib import Path

import pytest

from bastion import PolicyError, load_policy, parse_policy


def test_default_policy_loads_and_builds_every_attack() -> None:
    p = load_policy(None)
    assert p.name == "default"
    assert {a.key for a in p.attacks} == {
        "fgsm-linf",
        "pgd-linf",
        "pgd-l2",
        "autoattack-linf",
        "square-linf",
        "hopskipjump-l2",
    }
    for entry in p.attacks:
        for eps in entry.eps:
            assert entry.build(eps).threat.eps == eps


def _base(**over: object) -> dict[str, object]:
    return {"attacks": [{"attack": "pgd", "norm": "linf", "eps": [0.1], "params": {"steps": 5}}]} | over


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_base(sample=3), "sample: Extra inputs are not permitted"),
        (_base(samples=0), "samples: Input should be greater than or equal to 1"),
        ({"attacks": []}, "the policy runs nothing"),
        ({"attacks": [{"attack": "pgd", "eps": [-0.1]}]}, "every eps must be a finite number > 0"),
        ({"attacks": [{"attack": "pgd", "norm": "l1", "eps": [0.1]}]}, "attacks.0.norm"),
        ({"attacks": [{"attack": "deepfool", "eps": [0.1]}]}, "unknown attack 'deepfool'"),
        ({"attacks": [{"attack": "pgd", "eps": [0.1], "params": {"steps": 0}}]}, "steps must be an int >= 1"),
        ({"attacks": [{"attack": "pgd", "eps": [0.1], "params": {"stepz": 3}}]}, "has no setting(s) stepz"),
        (_base(thresholds=[{"attack": "fgsm-linf", "eps": 0.1, "min": 0.5}]), "which the policy does not run"),
        (_base(thresholds=[{"attack": "pgd-linf", "eps": 0.2, "min": 0.5}]), "selects {'eps': 0.2} but pgd-linf runs"),
        (_base(thresholds=[{"attack": "pgd-linf", "eps": 0.1}]), "give exactly one of min or max"),
        ({"attacks": [{"attack": "pgd", "eps": [0.1]}, {"attack": "pgd", "eps": [0.2]}]}, "entry ids must be unique"),
        ([1, 2], "must be a mapping"),
    ],
)
def test_malformed_policies_are_rejected_with_the_location(data: object, message: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(data)
    assert message in str(info.value)


def test_policy_files(tmp_path: Path) -> None:
    good = tmp_path / "p.yaml"
    good.write_text(
        "attacks:\n  - {attack: fgsm, eps: [0.1, 0.05]}\nthresholds:\n"
        "  - {attack: fgsm-linf, eps: 0.1, metric: success_rate, max: 0.9}\n"
    )
    p = load_policy(good)
    assert p.attacks[0].eps == [0.05, 0.1] and p.thresholds[0].passes(0.5) and not p.thresholds[0].passes(0.95)
    bad = tmp_path / "bad.yaml"
    bad.write_text("attacks: [unclosed\n")
    with pytest.raises(PolicyError, match="is not valid YAML"):
        load_policy(bad)
    with pytest.raises(PolicyError, match="does not exist"):
        load_policy(tmp_path / "none.yaml")
