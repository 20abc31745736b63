"""scikit-learn's 8x8 handwritten digits: the embedded default dataset (no files, no network)."""

from __future__ import annotations

import sklearn
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from bastion.data.base import DATASETS, Dataset, DatasetProvenance, fingerprint
from bastion.types import ModelSpec

SPLIT_SEED = 0
TEST_FRACTION = 0.2


@DATASETS.register("digits")
def digits() -> Dataset:
    """1,797 grey 8x8 digits scaled from 0..16 to [0, 1], shape (1, 8, 8); a fixed stratified 80/20 split."""
    bunch = load_digits()
    x, y = bunch.data, bunch.target
    sha, per = fingerprint({"data": x, "target": y})
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=y)

    def to_x(a: object) -> torch.Tensor:
        return torch.as_tensor(a, dtype=torch.float32).div_(16.0).reshape(-1, 1, 8, 8)

    return Dataset(
        name="digits",
        x_train=to_x(x_tr),
        y_train=torch.as_tensor(y_tr, dtype=torch.long),
        x_test=to_x(x_te),
        y_test=torch.as_tensor(y_te, dtype=torch.long),
        spec=ModelSpec(input_shape=(1, 8, 8), num_classes=10, bounds=(0.0, 1.0)),
        provenance=DatasetProvenance(
            name="digits",
            source=f"scikit-learn {sklearn.__version__} sklearn.datasets.load_digits (UCI optdigits test set)",
            location="embedded in scikit-learn",
            n_train=len(y_tr),
            n_test=len(y_te),
            sha256=sha,
            array_sha256=per,
            license="CC BY 4.0 (UCI)",
            preprocessing=f"x/16; stratified split test_fraction={TEST_FRACTION} seed={SPLIT_SEED}",
        ),
    )
