"""Adversarial training on digits: it hardens, it resumes exactly, it stops on catastrophic overfitting."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from bastion import PGD, Norm, ThreatModel
from bastion._progress import Progress
from bastion.data import Dataset
from bastion.defenses.training import AdversarialTraining, EpochRecord, adversarial_train
from bastion.defenses.training.adversarial import overfit_epoch
from bastion.errors import ConfigError, InputValidationError
from bastion.models.torch import TorchClassifier
from bastion.models.zoo import TrainedModel, train_model


def _robust(clf: TorchClassifier, digits: Dataset, eps: float = 0.1) -> float:
    res = PGD(ThreatModel(Norm.LINF, eps), steps=20).run(
        clf, digits.x_test, digits.y_test, generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        return float((clf.predict_logits(res.x_adv).argmax(1) == digits.y_test).float().mean())


def _fresh(digits: Dataset) -> TrainedModel:
    return train_model(digits, epochs=1, seed=0)


@pytest.mark.parametrize("method", ["pgd-at", "trades"])
def test_adversarial_training_beats_the_undefended_model_by_a_wide_margin(
    method: str, digits: Dataset, digits_model: TrainedModel
) -> None:
    undefended = _robust(digits_model.classifier, digits)
    settings = AdversarialTraining(method=method, eps=0.1, steps=5, epochs=10, check_samples=200)  # type: ignore[arg-type]
    res = adversarial_train(_fresh(digits).classifier, digits.x_train, digits.y_train, settings)
    hardened = _robust(res.classifier, digits)
    assert hardened >= undefended + 0.1, (undefended, hardened)
    assert len(res.history) == 10 and 1 <= res.best_epoch <= 10
    assert res.history[res.best_epoch - 1].robust_accuracy == max(r.robust_accuracy for r in res.history)
    record = res.training_record()
    assert record["method"] == method and record["settings"]["eps"] == 0.1 and record["settings"]["step_size"] > 0


def test_an_interrupted_run_resumes_to_the_same_weights(
    digits: Dataset, tmp_path: Path, interrupt_after: Callable[[int], Progress]
) -> None:
    # a cyclic schedule over all 4 epochs (lr 0.05, named: a peak of 0.2 overfits 4-epoch digits runs in epoch 2)
    settings = AdversarialTraining(method="fast-at", epochs=4, lr=0.05)
    full = adversarial_train(_fresh(digits).classifier, digits.x_train, digits.y_train, settings)
    steps_per_epoch = -(-(digits.x_train.shape[0] - settings.check_samples) // settings.batch_size)
    with pytest.raises(KeyboardInterrupt):  # killed early in epoch 3
        adversarial_train(
            _fresh(digits).classifier,
            digits.x_train,
            digits.y_train,
            settings,
            checkpoint_dir=tmp_path,
            progress=interrupt_after(2 * steps_per_epoch + 2),
        )
    resumed = adversarial_train(
        _fresh(digits).classifier, digits.x_train, digits.y_train, settings, checkpoint_dir=tmp_path, resume=True
    )
    assert resumed.resumed_from == 2 and [r.epoch for r in resumed.history] == [1, 2, 3, 4]
    assert "resumed after epoch 2" in resumed.notes and resumed.training_record()["resumed_from"] == 2
    a, b = full.classifier.module.state_dict(), resumed.classifier.module.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r.robust_accuracy for r in full.history] == [r.robust_accuracy for r in resumed.history]
    with pytest.raises(ConfigError, match="other settings"):
        adversarial_train(
            _fresh(digits).classifier,
            digits.x_train,
            digits.y_train,
            AdversarialTraining(method="fast-at", epochs=4, lr=0.05, eps=0.2),
            checkpoint_dir=tmp_path,
            resume=True,
        )


def test_catastrophic_overfitting_is_the_epoch_whose_check_collapsed() -> None:
    def h(*robust: float) -> list[EpochRecord]:
        return [EpochRecord(i + 1, 0.0, 0.9, r, 0.0) for i, r in enumerate(robust)]

    assert overfit_epoch(h(0.3, 0.5, 0.55, 0.6), 0.2) is None
    assert overfit_epoch(h(0.3, 0.5, 0.6, 0.05, 0.02), 0.2) == 4
    assert overfit_epoch(h(0.5, 0.45, 0.52), 0.2) is None  # noise, not a collapse


def test_bad_settings_and_data_say_what_to_fix(digits: Dataset, digits_model: TrainedModel) -> None:
    with pytest.raises(ConfigError, match="method must be one of"):
        AdversarialTraining(method="free-at")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="eps must be"):
        AdversarialTraining(eps=0)
    clf = _fresh(digits).classifier
    with pytest.raises(ConfigError, match="whole input range"):
        adversarial_train(clf, digits.x_train, digits.y_train, AdversarialTraining(eps=1.5))
    with pytest.raises(InputValidationError):
        adversarial_train(clf, digits.x_train.flatten(1), digits.y_train, AdversarialTraining())
    with pytest.raises(ConfigError, match="TorchClassifier"):
        adversarial_train(object(), digits.x_train, digits.y_train, AdversarialTraining())  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="resume needs"):
        adversarial_train(clf, digits.x_train, digits.y_train, AdversarialTraining(), resume=True)
    with pytest.raises(ConfigError, match="no checkpoint to resume"):
        adversarial_train(
            clf, digits.x_train, digits.y_train, AdversarialTraining(), checkpoint_dir=Path("/nonexistent"), resume=True
        )
    with pytest.raises(ConfigError, match="check_samples"):
        adversarial_train(clf, digits.x_train[:300], digits.y_train[:300], AdversarialTraining())


def test_n_fgsm_steps_beyond_the_ball_and_hardens(digits: Dataset, digits_model: TrainedModel) -> None:
    from bastion.defenses.training.adversarial import _n_fgsm_adversary

    s = AdversarialTraining(method="n-fgsm", eps=0.1)
    assert s.alpha == pytest.approx(0.1) and s.learning_rate == 0.05
    x, y = digits.x_test[:200], digits.y_test[:200]
    xa = _n_fgsm_adversary(digits_model.classifier, x, y, s, torch.Generator().manual_seed(0))
    delta = (xa - x).abs().flatten(1).amax(1)
    lo, hi = digits.spec.bounds
    assert float(xa.min()) >= lo and float(xa.max()) <= hi  # only the input bounds clip
    assert float(delta.max()) <= 0.3 + 1e-6 and float(delta.max()) > 0.2  # noise up to 2 eps, a step of eps
    undefended = _robust(digits_model.classifier, digits)
    res = adversarial_train(
        _fresh(digits).classifier,
        digits.x_train,
        digits.y_train,
        AdversarialTraining(method="n-fgsm", eps=0.1, epochs=10, check_samples=200),
    )
    assert _robust(res.classifier, digits) >= undefended + 0.1
    assert res.training_record()["settings"]["step_size"] == pytest.approx(0.1)
