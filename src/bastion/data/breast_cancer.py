"""scikit-learn's Wisconsin breast cancer data: 569 tabular records, 30 features, two classes."""

from __future__ import annotations

import sklearn
import torch
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split

from bastion.data.base import DATASETS, Dataset, DatasetProvenance, fingerprint
from bastion.types import ModelSpec

SPLIT_SEED = 0
TEST_FRACTION = 0.25


@DATASETS.register("breast-cancer")
def breast_cancer() -> Dataset:
    """Features min-max scaled to [0, 1] over the whole (fixed) dataset, shape (30,); stratified 75/25 split."""
    bunch = load_breast_cancer()
    x, y = bunch.data, bunch.target
    sha, per = fingerprint({"data": x, "target": y})
    lo, hi = x.min(axis=0), x.max(axis=0)
    scaled = (x - lo) / (hi - lo)
    x_tr, x_te, y_tr, y_te = train_test_split(scaled, y, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=y)
    return Dataset(
        name="breast-cancer",
        x_train=torch.as_tensor(x_tr, dtype=torch.float32),
        y_train=torch.as_tensor(y_tr, dtype=torch.long),
        x_test=torch.as_tensor(x_te, dtype=torch.float32),
        y_test=torch.as_tensor(y_te, dtype=torch.long),
        spec=ModelSpec(
            input_shape=(x.shape[1],),
            num_classes=2,
            bounds=(0.0, 1.0),
            class_names=tuple(str(n) for n in bunch.target_names),
        ),
        provenance=DatasetProvenance(
            name="breast-cancer",
            source=f"scikit-learn {sklearn.__version__} sklearn.datasets.load_breast_cancer (UCI WDBC)",
            location="embedded in scikit-learn",
            n_train=len(y_tr),
            n_test=len(y_te),
            sha256=sha,
            array_sha256=per,
            license="CC BY 4.0 (UCI)",
            preprocessing=f"per-feature min-max to [0,1]; stratified split test_fraction={TEST_FRACTION} "
            f"seed={SPLIT_SEED}",
        ),
    )
