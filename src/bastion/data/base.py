"""A dataset with its split, its input contract and a record of where it came from."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import Tensor

from bastion._registry import Registry
from bastion.errors import UnknownNameError
from bastion.types import ModelSpec


@dataclass(frozen=True)
class DatasetProvenance:
    """Where a dataset came from and a fingerprint of its exact content.

    ``sha256`` fingerprints the arrays as read from the source (shape, dtype and bytes of each, in a fixed order),
    so two runs that report the same hash trained or evaluated on the same numbers.
    """

    name: str
    source: str
    location: str
    n_train: int
    n_test: int
    sha256: str
    array_sha256: dict[str, str] = field(default_factory=dict)
    license: str = ""
    preprocessing: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "location": self.location,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "sha256": self.sha256,
            "array_sha256": dict(self.array_sha256),
            "license": self.license,
            "preprocessing": self.preprocessing,
        }


@dataclass(frozen=True)
class Dataset:
    """Train and test tensors (inputs float32 within ``spec.bounds``, labels int64) plus provenance."""

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    spec: ModelSpec
    provenance: DatasetProvenance

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, train={tuple(self.x_train.shape)}, test={tuple(self.x_test.shape)}, "
            f"classes={self.spec.num_classes}, sha256={self.provenance.sha256[:12]}…)"
        )


def fingerprint(arrays: dict[str, np.ndarray]) -> tuple[str, dict[str, str]]:
    """Combined and per-array sha256 over shape, dtype and bytes, in key order."""
    total = hashlib.sha256()
    per: dict[str, str] = {}
    for key in sorted(arrays):
        a = np.ascontiguousarray(arrays[key])
        h = hashlib.sha256()
        h.update(f"{key}:{a.dtype.str}:{a.shape}".encode())
        h.update(a.tobytes())
        per[key] = h.hexdigest()
        total.update(per[key].encode())
    return total.hexdigest(), per


Loader = Callable[..., Dataset]
DATASETS: Registry[Loader] = Registry("dataset")


def load_dataset(name: str, **kwargs: Any) -> Dataset:
    """Load a built-in dataset by name (``digits``, ``fashion-mnist``, ``breast-cancer``) or a user's data by path.

    A path may be an ``.npz`` file, a CSV file or an image folder; ``options=DataOptions(...)`` says how to read it
    (see :mod:`bastion.data.files`). Built-in names win over same-named files in the working directory.
    """
    if isinstance(name, str) and name.lower() in DATASETS.names():
        return DATASETS.get(name)(**kwargs)
    from pathlib import Path

    from bastion.data.files import load_data_path

    if isinstance(name, (str, Path)) and (Path(name).exists() or "/" in str(name) or "." in str(name)):
        return load_data_path(name, kwargs.get("options"))
    if isinstance(name, str) and name.lower() not in DATASETS.names():
        raise UnknownNameError(
            f"unknown dataset {name!r}: no built-in of that name ({', '.join(sorted(DATASETS.names()))}) and no file "
            "or folder there; give an .npz or CSV file or a folder of class/*.png images by its path"
        )
    return DATASETS.get(name)(**kwargs)
