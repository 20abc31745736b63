"""Poison detection on a real backdoored model: the attacked class and its poisoned samples are found, and clean
data is not flagged."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from bastion.data import Dataset
from bastion.defenses.data import POISON_DETECTORS, CheckSettings, check_dataset, clean_dataset, detect_poison
from bastion.defenses.data.cleaning import features_of
from bastion.errors import ConfigError
from bastion.models.zoo import TrainedModel


def test_projection_gap_finds_the_backdoor_class_and_its_samples(fmnist_badnets) -> None:  # type: ignore[no-untyped-def]
    ps, model = fmnist_badnets.poisoned, fmnist_badnets.model
    report = detect_poison(features_of(model.classifier, ps.x), ps.y, detector="projection-gap")
    assert report.attacked == [0]
    tp = int((report.flagged & ps.poisoned).sum())
    assert tp / int(report.flagged.sum()) >= 0.9 and tp / ps.count >= 0.9


@pytest.mark.parametrize("name", POISON_DETECTORS.names())
def test_no_detector_flags_the_clean_rows(name: str, fmnist_badnets) -> None:  # type: ignore[no-untyped-def]
    data, model = fmnist_badnets.data, fmnist_badnets.model
    report = detect_poison(features_of(model.classifier, data.x_train), data.y_train, detector=name)
    assert report.attacked == [] and not bool(report.flagged.any())


def test_a_clean_digits_model_on_its_own_data_is_not_flagged(digits: Dataset, digits_model: TrainedModel) -> None:
    report = detect_poison(features_of(digits_model.classifier, digits.x_train), digits.y_train)
    assert report.attacked == []


def test_check_and_clean_remove_the_poison_and_record_both_digests(fmnist_badnets) -> None:  # type: ignore[no-untyped-def]
    data, ps, model = fmnist_badnets.data, fmnist_badnets.poisoned, fmnist_badnets.model
    from bastion.data.base import fingerprint

    digest, _ = fingerprint({"x_train": ps.x.numpy(), "y_train": ps.y.numpy()})
    pds = replace(data, x_train=ps.x, y_train=ps.y, provenance=replace(data.provenance, sha256=digest))
    check = check_dataset(
        pds, settings=CheckSettings(checks=("schema", "duplicates", "poison")), model=model.classifier
    )
    assert check.verdict == "problems found" and check.features_from == "the given model"
    poison = next(f for f in check.findings if f.check == "poison")
    assert (
        poison.severity == "error"
        and poison.removable
        and "attacked classes: T-shirt/top (250 samples" in poison.message
    )
    cleaned = clean_dataset(pds, check)
    removed = torch.zeros(ps.x.shape[0], dtype=torch.bool)
    removed[cleaned.removed_index] = True
    assert int((removed & ps.poisoned).sum()) >= 0.9 * ps.count
    record = cleaned.record.to_dict()
    assert record["source"]["sha256"] == digest and record["removed"] == int(removed.sum())
    assert record["rows"][0]["checks"].keys() <= {"poison", "duplicates"}
    assert cleaned.x.shape[0] + cleaned.removed_x.shape[0] == ps.x.shape[0]
    with pytest.raises(ConfigError, match="digest differs"):
        clean_dataset(data, check)
