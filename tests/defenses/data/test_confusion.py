"""Confusion training: the rows a model confused on trusted data still fits are the poison; a clean set gives none,
a model that cannot be confused gives an inconclusive result (never a clean bill), and bad input one message."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from bastion.attacks.poisoning import BadNets, PatchTrigger
from bastion.data import Dataset
from bastion.defenses.data import CheckSettings, ConfusionSettings, check_dataset, confusion_training
from bastion.errors import ConfigError
from bastion.models.zoo.train import TrainedModel, train_model

FAST = ConfusionSettings(steps=200, check_every=100, batch_size=64)


def test_finds_a_planted_trigger_on_digits(digits: Dataset) -> None:
    # 5% BadNets, 3x3 patch (ASR about 0.9): the feature detectors cannot separate it on 8x8 images; this can
    attack = BadNets(target=0, trigger=PatchTrigger(size=3))
    ps = attack.poison(
        digits.x_train, digits.y_train, digits.spec, rate=0.05, generator=torch.Generator().manual_seed(0)
    )
    model = train_model(replace(digits, x_train=ps.x, y_train=ps.y), epochs=15, seed=0)
    rep = confusion_training(
        model.module,
        ps.x,
        ps.y,
        digits.x_test,
        digits.y_test,
        num_classes=10,
        settings=ConfusionSettings(steps=500, check_every=250, batch_size=64),
    )
    assert rep.conclusive and rep.attacked == [0]
    hit = int((rep.flagged & ps.poisoned).sum())
    assert hit >= 0.9 * int(ps.poisoned.sum()) and hit >= 0.9 * int(rep.flagged.sum())


def test_finds_the_backdoor_class_and_its_samples_and_leaves_the_model_alone(fmnist_badnets) -> None:  # type: ignore[no-untyped-def]
    ds, ps, model = fmnist_badnets.data, fmnist_badnets.poisoned, fmnist_badnets.model
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    rep = confusion_training(model.module, ps.x, ps.y, ds.x_test, ds.y_test, num_classes=10, settings=FAST)
    assert rep.conclusive and rep.attacked == [0]
    hit = int((rep.flagged & ps.poisoned).sum())
    assert hit >= 0.95 * int(ps.poisoned.sum()) and hit >= 0.95 * int(rep.flagged.sum())
    # confused, a clean row's label gets about 1/C; the poison's trigger still names its target
    assert float(rep.scores[~ps.poisoned].median()) < 0.15 < rep.threshold < float(rep.scores[ps.poisoned].median())
    assert rep.false_rate <= FAST.max_false and all(f["rows_scored"] == 2500 for f in rep.folds)
    assert all(torch.equal(before[k], v) for k, v in model.module.state_dict().items())


def test_a_clean_training_set_has_no_attacked_class(digits: Dataset, digits_model: TrainedModel) -> None:
    settings = ConfusionSettings(steps=1000, check_every=250, batch_size=64)
    rep = confusion_training(
        digits_model.module,
        digits.x_train,
        digits.y_train,
        digits.x_test,
        digits.y_test,
        num_classes=10,
        settings=settings,
    )
    assert rep.conclusive and rep.attacked == [] and not rep.flagged.any()
    assert max(c.share for c in rep.classes) < settings.min_share


def test_a_model_that_was_never_confused_is_inconclusive_not_guilty(
    digits: Dataset, digits_model: TrainedModel
) -> None:
    # one step leaves the model answering held-out rows correctly: the run stops before any confused checkpoint
    settings = CheckSettings(checks=("schema", "confusion"), confusion=ConfusionSettings(steps=1, check_every=1))
    chk = check_dataset(digits, settings=settings, model=digits_model.classifier)
    assert chk.confusion is not None and not chk.confusion.conclusive and not chk.confusion.flagged.any()
    finding = chk.findings[-1]
    assert finding.check == "confusion" and finding.severity == "warning" and "inconclusive" in finding.message
    assert chk.verdict == "problems found" and "test split" in chk.trusted_from


def test_without_trusted_rows_the_check_says_it_did_not_run(digits: Dataset, digits_model: TrainedModel) -> None:
    one_split = replace(digits, x_train=digits.x_train[:0], y_train=digits.y_train[:0])
    chk = check_dataset(
        one_split, settings=CheckSettings(checks=("schema", "confusion")), model=digits_model.classifier
    )
    assert chk.confusion is None and chk.findings[-1].check == "confusion"
    assert "did not run" in chk.findings[-1].message and "--trusted" in chk.findings[-1].message


def test_bad_input_is_refused_with_the_fix(digits: Dataset, digits_model: TrainedModel) -> None:
    x, y = digits.x_train, digits.y_train
    with pytest.raises(ConfigError, match="at least 50 trusted"):
        confusion_training(digits_model.module, x, y, x[:10], y[:10], num_classes=10)
    with pytest.raises(ConfigError, match="cannot run confusion training") as err:
        confusion_training(digits_model.module, x, y, x[:100, :, :4], y[:100], num_classes=10)
    assert "trusted rows have shape" in str(err.value.problems)
    with pytest.raises(ConfigError, match="cannot run"):
        confusion_training(digits_model.classifier, x, y, x, y, num_classes=10)
    with pytest.raises(ConfigError, match="cannot run"):
        confusion_training(digits_model.module, x, y, x, y + 10, num_classes=10)
    with pytest.raises(ConfigError, match="invalid confusion-training settings"):
        ConfusionSettings(weight=1.0)
