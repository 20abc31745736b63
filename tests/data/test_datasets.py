from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from bastion import DatasetNotFoundError, InputValidationError, UnknownNameError, load_dataset
from bastion.data import fashion_mnist as fm


def test_digits_shapes_bounds_and_provenance() -> None:
    ds = load_dataset("digits")
    assert ds.x_train.shape == (1437, 1, 8, 8) and ds.x_test.shape == (360, 1, 8, 8)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert float(ds.x_train.min()) == 0.0 and float(ds.x_train.max()) == 1.0
    p = ds.provenance
    assert (p.n_train, p.n_test) == (1437, 360)
    assert len(p.sha256) == 64 and set(p.array_sha256) == {"data", "target"}
    # deterministic: the same data and split every time
    again = load_dataset("digits")
    assert torch.equal(again.x_test, ds.x_test) and again.provenance.sha256 == p.sha256


def test_breast_cancer_is_tabular_in_unit_range() -> None:
    ds = load_dataset("breast-cancer")
    assert ds.x_train.shape[1:] == (30,) and ds.spec.num_classes == 2
    assert ds.spec.class_names == ("malignant", "benign")
    all_x = torch.cat([ds.x_train, ds.x_test])
    assert float(all_x.min()) == 0.0 and float(all_x.max()) == 1.0
    assert ds.provenance.n_train + ds.provenance.n_test == 569


def test_unknown_dataset_lists_the_known_ones() -> None:
    with pytest.raises(UnknownNameError, match=r"no built-in of that name \(breast-cancer, digits, fashion-mnist\)"):
        load_dataset("mnist")


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture()
def tiny_fashion(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    _write_idx(tmp_path / fm.FILES["x_train"], rng.integers(0, 256, (20, 28, 28)))
    _write_idx(tmp_path / fm.FILES["y_train"], rng.integers(0, 10, 20))
    _write_idx(tmp_path / fm.FILES["x_test"], rng.integers(0, 256, (8, 28, 28)))
    _write_idx(tmp_path / fm.FILES["y_test"], rng.integers(0, 10, 8))
    return tmp_path


def test_fashion_mnist_reads_idx_files_from_argument(tiny_fashion: Path) -> None:
    ds = load_dataset("fashion-mnist", path=tiny_fashion)
    assert ds.x_train.shape == (20, 1, 28, 28) and ds.x_test.shape == (8, 1, 28, 28)
    raw = fm.read_idx(tiny_fashion / fm.FILES["x_test"])
    assert torch.allclose(ds.x_test[:, 0], torch.from_numpy(raw.astype(np.float32) / 255))
    assert ds.provenance.location == str(tiny_fashion) and ds.spec.class_names[9] == "Ankle boot"


def test_fashion_mnist_env_variable_overrides_default(tiny_fashion: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(fm.ENV_VAR, str(tiny_fashion))
    assert load_dataset("fashion-mnist").provenance.n_train == 20


def test_fashion_mnist_missing_names_the_install_command(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist", path=tmp_path / "nowhere")


def test_idx_with_wrong_magic_or_truncated_data_is_rejected(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gz"
    with gzip.open(bad, "wb") as f:
        f.write(b"\x00\x00\x0d\x01" + struct.pack(">I", 3) + b"abc")  # float dtype code
    with pytest.raises(InputValidationError, match="not an unsigned-byte IDX"):
        fm.read_idx(bad)
    short = tmp_path / "short.gz"
    with gzip.open(short, "wb") as f:
        f.write(b"\x00\x00\x08\x01" + struct.pack(">I", 10) + b"abc")
    with pytest.raises(InputValidationError, match="declares shape"):
        fm.read_idx(short)


@pytest.mark.skipif(
    not (fm.DEFAULT_DIR / fm.FILES["x_train"]).is_file(),
    reason="Debian's dataset-fashion-mnist is not installed (.ci/run installs it)",
)
def test_real_debian_fashion_mnist() -> None:
    ds = load_dataset("fashion-mnist", path=fm.DEFAULT_DIR)
    assert ds.x_train.shape == (60000, 1, 28, 28) and ds.x_test.shape == (10000, 1, 28, 28)
    assert torch.bincount(ds.y_test).tolist() == [1000] * 10
