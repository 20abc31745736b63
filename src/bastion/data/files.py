"""A user's own data from a file or folder: ``.npz`` arrays, a CSV table with a label column, or an image folder.

Each is read without pickle and gets the same provenance record as the built-in datasets (sha256 of the arrays as
read, counts, and every preprocessing step), so a report says exactly which numbers were assessed. Everything read
is used as the test split unless the file holds a separate training split (``x_train``/``y_train`` in an npz).
"""

from __future__ import annotations

import csv
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bastion.data.base import Dataset, DatasetProvenance, fingerprint
from bastion.errors import ConfigError, InputValidationError
from bastion.types import Bounds, ModelSpec

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class DataOptions:
    """How to read a user's data file.

    ``label_column``: the CSV column holding labels. ``image_size``: (height, width) images are resized to.
    ``channels``: 1 (grayscale) or 3 (RGB) for image folders. ``scale``: inputs are divided by it (default 255 for
    images and uint8 arrays, else 1). ``bounds``: the valid input range (default [0, 1] when the data fit in it,
    else the data's own minimum and maximum). ``input_shape``: reshape each row of a table or npz to this shape.
    """

    label_column: str = "label"
    image_size: tuple[int, int] | None = None
    channels: int | None = None
    scale: float | None = None
    bounds: Bounds | None = None
    input_shape: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        problems = []
        if self.scale is not None and (not math.isfinite(self.scale) or self.scale <= 0):
            problems.append(f"scale must be a finite number > 0, got {self.scale}")
        if self.channels is not None and self.channels not in (1, 3):
            problems.append(f"channels must be 1 (grayscale) or 3 (RGB), got {self.channels}")
        if self.image_size is not None and (len(self.image_size) != 2 or min(self.image_size) < 1):
            problems.append(f"image size must be HEIGHTxWIDTH with positive sizes, got {self.image_size}")
        if problems:
            raise ConfigError("invalid data options", problems=problems)


def load_data_path(path: str | Path, options: DataOptions | None = None) -> Dataset:
    """Read ``path``: a folder of ``class/*.png`` images, an ``.npz`` file, or a CSV file."""
    p = Path(path)
    opts = options or DataOptions()
    if p.is_dir():
        if opts.label_column != "label" or opts.input_shape is not None:
            raise ConfigError(
                f"{p} is an image folder: its labels are the sub-folder names and its shape comes from --image-size "
                "and --channels; drop --label-column / --input-shape"
            )
        return load_image_folder(p, opts)
    if opts.image_size is not None or opts.channels is not None:
        raise ConfigError(f"--image-size and --channels describe an image folder; {p.name} is a file")
    if not p.is_file():
        raise ConfigError(
            f"no dataset {str(path)!r}: give a built-in name (digits, fashion-mnist, breast-cancer), an .npz or CSV "
            "file, or a folder of class/*.png images"
        )
    with open(p, "rb") as f:
        head = f.read(4)
    if head == b"PK\x03\x04" or p.suffix.lower() == ".npz":
        if opts.label_column != "label":
            raise ConfigError(f"--label-column names a CSV column; {p.name} is an .npz file (arrays x and y)")
        return load_npz(p, opts)
    return load_csv(p, opts)


def load_npz(path: Path, opts: DataOptions) -> Dataset:
    """Arrays ``x``/``y`` (all test data) or ``x_test``/``y_test`` (plus optional ``x_train``/``y_train``)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (ValueError, OSError, zipfile.BadZipFile) as e:
        raise InputValidationError(
            f"{path.name} is not a readable .npz without pickled objects: {str(e).splitlines()[0]}; save plain "
            "numeric arrays with numpy.savez"
        ) from None
    if "x_test" in arrays and "y_test" in arrays:
        x_te, y_te = arrays["x_test"], arrays["y_test"]
        x_tr, y_tr = arrays.get("x_train"), arrays.get("y_train")
    elif "x" in arrays and "y" in arrays:
        x_te, y_te, x_tr, y_tr = arrays["x"], arrays["y"], None, None
    else:
        raise InputValidationError(
            f"{path.name} holds arrays {sorted(arrays)}; it needs x and y (or x_test and y_test): "
            "numpy.savez(path, x=inputs, y=labels)"
        )
    steps = []
    x_te, note = _to_float(x_te, opts.scale, "x")
    steps += note
    if x_tr is not None and y_tr is not None:
        x_tr, _ = _to_float(x_tr, opts.scale, "x_train")
    shape = opts.input_shape or tuple(int(d) for d in x_te.shape[1:])
    x_te = _reshape(x_te, shape, path.name)
    if x_tr is not None:
        x_tr = _reshape(x_tr, shape, path.name)
    y_te_i, names = _labels(y_te, path.name)
    y_tr_i = _labels(y_tr, path.name, names)[0] if y_tr is not None else None
    return _dataset(path, "npz", x_te, y_te_i, names, arrays, opts, steps, x_tr, y_tr_i)


def load_csv(path: Path, opts: DataOptions) -> Dataset:
    """A header row, numeric feature columns and one label column (``opts.label_column``)."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError) as e:
        raise InputValidationError(f"cannot read {path.name} as a UTF-8 CSV file: {e}") from None
    if len(rows) < 2:
        raise InputValidationError(f"{path.name} needs a header row and at least one data row")
    header = [h.strip() for h in rows[0]]
    if opts.label_column not in header:
        raise InputValidationError(
            f"{path.name} has no column {opts.label_column!r} (columns: {', '.join(header[:12])}"
            f"{'…' if len(header) > 12 else ''}); name the label column with --label-column"
        )
    li = header.index(opts.label_column)
    body = [r for r in rows[1:] if any(c.strip() for c in r)]
    bad_len = [i + 2 for i, r in enumerate(body) if len(r) != len(header)]
    if bad_len:
        raise InputValidationError(
            f"{path.name}: rows {bad_len[:5]} have a different number of fields than the header ({len(header)})"
        )
    features = [j for j in range(len(header)) if j != li]
    cols = np.array([[r[j].strip() for j in features] for r in body], dtype=object)
    try:
        x = cols.astype(np.float64)
    except ValueError:
        bad = next(header[features[j]] for j in range(cols.shape[1]) if not all(_is_number(v) for v in cols[:, j]))
        raise InputValidationError(
            f"{path.name}: column {bad!r} holds values that are not numbers; encode it numerically or drop it"
        ) from None
    labels = np.array([r[li].strip() for r in body])
    y, names = _labels(labels, path.name)
    x32, steps = _to_float(x, opts.scale, "features")
    shape = opts.input_shape or (x32.shape[1],)
    x32 = _reshape(x32, shape, path.name)
    return _dataset(path, "csv", x32, y, names, {"features": x, "labels": labels.astype(str)}, opts, steps)


def load_image_folder(root: Path, opts: DataOptions) -> Dataset:
    """``root/<class>/*.png``: classes are the sorted sub-folder names; every image is resized to ``image_size``."""
    from PIL import Image, UnidentifiedImageError

    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if len(classes) < 2:
        raise InputValidationError(
            f"{root} needs one sub-folder per class (at least two), each holding images; found {classes or 'none'}"
        )
    files = [
        (c, f)
        for i, c in enumerate(classes)
        for f in sorted((root / c).iterdir())
        if f.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not files:
        raise InputValidationError(f"{root} has class folders but no images ({', '.join(IMAGE_SUFFIXES)})")
    mode = {1: "L", 3: "RGB", None: None}[opts.channels]
    images, labels, resized = [], [], 0
    size = opts.image_size
    for c, f in files:
        try:
            with Image.open(f) as im:
                if mode is None:
                    mode = "L" if im.mode in ("L", "1", "I;16", "I") else "RGB"
                img = im.convert(mode)
        except (UnidentifiedImageError, OSError) as e:
            raise InputValidationError(f"cannot read image {f}: {e}") from None
        if size is None:
            size = (img.height, img.width)
        if (img.height, img.width) != size:
            img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            resized += 1
        arr = np.asarray(img, dtype=np.uint8)
        images.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
        labels.append(classes.index(c))
    raw = np.stack(images)
    scale = opts.scale if opts.scale is not None else 255.0
    x = (raw.astype(np.float32) / scale).astype(np.float32)
    steps = [f"{mode} images", f"divided by {scale:g}"]
    if resized and size is not None:
        steps.append(f"{resized} of {len(files)} images resized to {size[0]}x{size[1]} (bilinear)")
    y = np.asarray(labels, dtype=np.int64)
    return _dataset(root, "image folder", x, y, tuple(classes), {"images": raw, "labels": y}, opts, steps)


def _is_number(v: object) -> bool:
    try:
        float(str(v))
    except ValueError:
        return False
    return True


def _to_float(x: np.ndarray, scale: float | None, name: str) -> tuple[np.ndarray, list[str]]:
    if x.dtype == np.uint8:
        s = scale if scale is not None else 255.0
        return (x.astype(np.float32) / s).astype(np.float32), [f"{name}: uint8 divided by {s:g}"]
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer) or x.dtype == np.bool_):
        raise InputValidationError(f"{name} must hold numbers, got dtype {x.dtype}")
    out = x.astype(np.float32)
    if scale is not None:
        return (out / scale).astype(np.float32), [f"{name}: divided by {scale:g}"]
    return out, []


def _reshape(x: np.ndarray, shape: tuple[int, ...], source: str) -> np.ndarray:
    if x.ndim < 2 or x.shape[0] == 0:
        raise InputValidationError(f"{source}: inputs must be an (N, ...) array with N >= 1, got shape {x.shape}")
    per = int(np.prod(x.shape[1:]))
    if per != int(np.prod(shape)):
        raise InputValidationError(
            f"{source}: each input has {per} values, which cannot be reshaped to --input-shape {shape}"
        )
    return x.reshape((x.shape[0], *shape))


def _labels(y: np.ndarray, source: str, names: tuple[str, ...] | None = None) -> tuple[np.ndarray, tuple[str, ...]]:
    """Class indices 0..K-1 (integers) or names (strings, mapped to their sorted order)."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise InputValidationError(f"{source}: labels must be a 1-D array, got shape {y.shape}")
    if np.issubdtype(y.dtype, np.integer) or (np.issubdtype(y.dtype, np.floating) and np.all(np.mod(y, 1) == 0)):
        yi = y.astype(np.int64)
        if yi.min() < 0:
            raise InputValidationError(f"{source}: labels must be class indices >= 0, found {int(yi.min())}")
        k = int(yi.max()) + 1 if names is None else len(names)
        return yi, names or tuple(str(i) for i in range(max(k, 2)))
    if np.issubdtype(y.dtype, np.floating):
        raise InputValidationError(f"{source}: labels must be class indices or names, found fractional values")
    strings = y.astype(str)
    if names is None:
        ints = [s for s in strings if s.lstrip("-").isdigit()]
        if len(ints) == len(strings):
            return _labels(np.array([int(s) for s in strings]), source)
        names = tuple(sorted(set(strings)))
    lookup = {n: i for i, n in enumerate(names)}
    unknown = sorted(set(strings) - set(lookup))
    if unknown:
        raise InputValidationError(f"{source}: labels {unknown[:5]} are not among the classes {list(names)}")
    return np.array([lookup[s] for s in strings], dtype=np.int64), names


def _dataset(
    source: Path,
    kind: str,
    x: np.ndarray,
    y: np.ndarray,
    names: tuple[str, ...],
    raw: dict[str, np.ndarray],
    opts: DataOptions,
    steps: list[str],
    x_train: np.ndarray | None = None,
    y_train: np.ndarray | None = None,
) -> Dataset:
    if len(y) != x.shape[0]:
        raise InputValidationError(f"{source.name}: {x.shape[0]} inputs but {len(y)} labels")
    if len(names) < 2:
        raise InputValidationError(f"{source.name}: found a single class; a classifier's data needs at least two")
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x.reshape(x.shape[0], -1))).any(1).sum())
        raise InputValidationError(f"{source.name}: {bad} input(s) hold NaN or infinite values; clean or drop them")
    lo, hi = float(x.min()), float(x.max())
    if opts.bounds is not None:
        bounds = opts.bounds
        if lo < bounds[0] or hi > bounds[1]:
            raise InputValidationError(
                f"{source.name}: values span [{lo:g}, {hi:g}], outside --bounds {bounds[0]:g},{bounds[1]:g}; "
                "widen the bounds or scale the data (nothing is clipped)"
            )
    elif lo >= 0.0 and hi <= 1.0:
        bounds = (0.0, 1.0)
    else:
        bounds = (lo, hi)
        steps = [*steps, f"bounds taken from the data: [{lo:g}, {hi:g}] (pass --bounds to set them)"]
    spec = ModelSpec(tuple(int(d) for d in x.shape[1:]), len(names), bounds, names)
    sha, per = fingerprint(raw)
    empty = np.zeros((0, *x.shape[1:]), dtype=np.float32)
    x_tr = x_train if x_train is not None else empty
    y_tr = y_train if y_train is not None else np.zeros(0, dtype=np.int64)
    return Dataset(
        name=source.name,
        x_train=torch.from_numpy(np.ascontiguousarray(x_tr, dtype=np.float32)),
        y_train=torch.from_numpy(np.ascontiguousarray(y_tr, dtype=np.int64)),
        x_test=torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
        y_test=torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64)),
        spec=spec,
        provenance=DatasetProvenance(
            name=source.name,
            source=f"user {kind}",
            location=str(source.resolve()),
            n_train=int(x_tr.shape[0]),
            n_test=int(x.shape[0]),
            sha256=sha,
            array_sha256=per,
            preprocessing="; ".join(steps) or "none",
        ),
    )
