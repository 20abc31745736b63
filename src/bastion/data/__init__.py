"""Datasets with provenance, available without a network."""

from __future__ import annotations

from bastion.data import breast_cancer as _breast_cancer  # noqa: F401  (registers the loader)
from bastion.data import digits as _digits  # noqa: F401
from bastion.data import fashion_mnist as _fashion_mnist  # noqa: F401
from bastion.data.base import DATASETS, Dataset, DatasetProvenance, load_dataset

__all__ = ["DATASETS", "Dataset", "DatasetProvenance", "load_dataset"]
