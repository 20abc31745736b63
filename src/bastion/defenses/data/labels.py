"""Label errors by confident learning (Northcutt, Jiang & Chuang 2021), through cleanlab.

Confident learning needs each training point's predicted class probabilities from a model that did not train on
that point: Bastion gets them by k-fold cross-validation with a recipe (the data's reference net unless one is
given), or takes the user's own out-of-sample probabilities. cleanlab then estimates how many labels are wrong from
the confident joint of given and predicted labels (its ``off_diagonal`` estimate) and ranks every point by its
label quality (the predicted probability of its given label); the lowest-ranked points, as many as estimated, are
the finding. On Fashion-MNIST with 10% of the labels flipped at random this finds 95% of the flips at 85% precision
(bench/poisoning.py); part of the rest are Fashion-MNIST's own ambiguous labels (shirt against T-shirt and
pullover), which the benchmark counts as false positives.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from torch import Tensor

from bastion._progress import NullProgress, Progress
from bastion.defenses.data.findings import Finding
from bastion.errors import ConfigError
from bastion.models.zoo.recipe import Recipe, train_recipe


def cross_validated_probs(
    dataset: Any,
    x: Tensor,
    y: Tensor,
    *,
    recipe: Recipe,
    folds: int = 3,
    seed: int = 0,
    progress: Progress | None = None,
) -> Tensor:
    """(N, classes) softmax probabilities, each row from the fold model that did not train on it."""
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ConfigError(f"cross-validation needs folds >= 2, got {folds!r}")
    n = int(y.shape[0])
    if n < folds * 2:
        raise ConfigError(f"{n} training samples are too few for {folds}-fold cross-validation")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    probs = torch.zeros(n, dataset.spec.num_classes)
    for f in range(folds):
        held = perm[f::folds]
        train = torch.ones(n, dtype=torch.bool)
        train[held] = False
        model = train_recipe(recipe, dataset, x[train], y[train], seed=seed + f, progress=progress)
        probs[held] = torch.softmax(model.classifier.predict_logits(x[held]).float(), 1)
    return probs


def label_issues(
    dataset: Any,
    x: Tensor | None = None,
    y: Tensor | None = None,
    *,
    recipe: Recipe | None = None,
    folds: int = 3,
    pred_probs: Tensor | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> list[Finding]:
    """The training points whose labels confident learning judges wrong, lowest label quality first, each with its
    quality score (the out-of-sample probability of the given label). ``pred_probs``: the user's own out-of-sample
    probabilities (then nothing is trained)."""
    from cleanlab.count import num_label_issues
    from cleanlab.rank import get_label_quality_scores

    x = dataset.x_train if x is None else x
    y = dataset.y_train if y is None else y
    k = dataset.spec.num_classes
    present = torch.unique(y)
    if present.numel() < 2:
        raise ConfigError("label-error detection needs at least two classes in the training labels")
    start = time.perf_counter()
    how = "given out-of-sample probabilities"
    if pred_probs is None:
        recipe = recipe or Recipe.for_data(dataset.spec, dataset.name, epochs=4)
        pred_probs = cross_validated_probs(
            dataset, x, y, recipe=recipe, folds=folds, seed=seed, progress=progress or NullProgress()
        )
        how = f"{folds}-fold cross-validated {recipe.architecture} ({recipe.epochs} epochs)"
    elif tuple(pred_probs.shape) != (y.shape[0], k):
        raise ConfigError(f"pred_probs must be ({y.shape[0]}, {k}), got {tuple(pred_probs.shape)}")
    pt = pred_probs.to(torch.float64).clamp_min(1e-12)
    p = (pt / pt.sum(1, keepdim=True)).numpy()
    labels = y.numpy().astype(np.int64)
    count = int(num_label_issues(labels, p, estimation_method="off_diagonal"))
    quality = get_label_quality_scores(labels, p, method="self_confidence")
    order = np.argsort(quality, kind="stable")[:count]
    seconds = time.perf_counter() - start
    accuracy = float(np.mean(p.argmax(1) == labels))
    details = {"method": "confident learning (cleanlab)", "probabilities": how, "seconds": round(seconds, 2)}
    details["agreement_with_given_labels"] = round(accuracy, 4)
    if count == 0:
        return [Finding("label-errors", "info", "confident learning finds no label errors", details=details)]
    return [
        Finding(
            "label-errors",
            "warning",
            f"{count} labels look wrong ({count / len(labels):.1%} of the training set): the out-of-sample "
            "prediction is confident in another class",
            tuple(int(i) for i in order),
            tuple(float(quality[i]) for i in order),
            "probability of the given label",
            removable=True,
            details=details,
        )
    ]
