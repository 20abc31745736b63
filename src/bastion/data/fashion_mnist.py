"""Fashion-MNIST read from the IDX files of Debian's ``dataset-fashion-mnist`` package (no download)."""

from __future__ import annotations

import functools
import gzip
import os
import struct
from pathlib import Path

import numpy as np
import torch

from bastion.data.base import DATASETS, Dataset, DatasetProvenance, fingerprint
from bastion.errors import DatasetNotFoundError, InputValidationError
from bastion.types import ModelSpec

DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
ENV_VAR = "BASTION_FASHION_MNIST"
INSTALL_HINT = (
    "install it with `apt-get install dataset-fashion-mnist` (Debian), or point the "
    f"{ENV_VAR} environment variable or the `path` argument at a folder holding the four IDX .gz files"
)
FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
_IDX_UBYTE = 0x08


def read_idx(path: Path) -> np.ndarray:
    """Read one (optionally gzipped) IDX file of unsigned bytes into an array of its declared shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise InputValidationError(f"cannot read IDX file {path}: {e}") from None
    if len(raw) < 4:
        raise InputValidationError(f"{path} is not an IDX file: only {len(raw)} bytes")
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != _IDX_UBYTE or ndim < 1:
        raise InputValidationError(
            f"{path} is not an unsigned-byte IDX file (magic {raw[:4].hex()}); expected 0000 08 0N"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise InputValidationError(f"{path} is truncated inside its header")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise InputValidationError(
            f"{path} declares shape {shape} ({expected} bytes) but holds {len(raw) - header} bytes of data"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def resolve_dir(path: str | os.PathLike[str] | None = None) -> Path:
    """The folder to read: the argument, else ``$BASTION_FASHION_MNIST``, else Debian's install location."""
    if path is not None:
        return Path(path)
    env = os.environ.get(ENV_VAR)
    return Path(env) if env else DEFAULT_DIR


@functools.lru_cache(maxsize=2)
def _read_arrays(folder: str) -> dict[str, np.ndarray]:
    root = Path(folder)
    missing = [name for name in FILES.values() if not (root / name).is_file()]
    if missing:
        raise DatasetNotFoundError(f"Fashion-MNIST files missing in {root}: {', '.join(missing)}; {INSTALL_HINT}")
    arrays = {key: read_idx(root / name) for key, name in FILES.items()}
    problems = []
    for split in ("train", "test"):
        xs, ys = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if xs.ndim != 3 or xs.shape[1:] != (28, 28):
            problems.append(f"{split} images have shape {xs.shape}, expected (N, 28, 28)")
        if ys.ndim != 1 or ys.shape[0] != xs.shape[0]:
            problems.append(f"{split} labels have shape {ys.shape}, expected ({xs.shape[0]},)")
        elif ys.size and int(ys.max()) > 9:
            problems.append(f"{split} labels exceed 9")
    if problems:
        raise InputValidationError(f"malformed Fashion-MNIST files in {root}", problems=problems)
    return arrays


@DATASETS.register("fashion-mnist")
def fashion_mnist(path: str | os.PathLike[str] | None = None) -> Dataset:
    """70,000 28x28 grey images of clothing in 10 classes, pixels scaled to [0, 1], shape (1, 28, 28)."""
    root = resolve_dir(path)
    arrays = _read_arrays(str(root.resolve()))
    sha, per = fingerprint(arrays)

    def to_x(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.astype(np.float32) / 255.0).unsqueeze(1)

    def to_y(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a.astype(np.int64))

    return Dataset(
        name="fashion-mnist",
        x_train=to_x(arrays["x_train"]),
        y_train=to_y(arrays["y_train"]),
        x_test=to_x(arrays["x_test"]),
        y_test=to_y(arrays["y_test"]),
        spec=ModelSpec(input_shape=(1, 28, 28), num_classes=10, bounds=(0.0, 1.0), class_names=CLASS_NAMES),
        provenance=DatasetProvenance(
            name="fashion-mnist",
            source="Zalando Research Fashion-MNIST, IDX files of Debian package dataset-fashion-mnist",
            location=str(root),
            n_train=int(arrays["y_train"].shape[0]),
            n_test=int(arrays["y_test"].shape[0]),
            sha256=sha,
            array_sha256=per,
            license="MIT",
            preprocessing="pixels/255; the official 60,000/10,000 split",
        ),
    )
