"""A user's own data: .npz, CSV and image folders, each with provenance and clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bastion.data import Dataset, load_dataset
from bastion.data.files import DataOptions
from bastion.errors import ConfigError, InputValidationError


def test_npz_round_trip_with_provenance(digits: Dataset, tmp_path: Path) -> None:
    path = tmp_path / "mine.npz"
    np.savez(path, x=digits.x_test.numpy(), y=digits.y_test.numpy())
    data = load_dataset(str(path))
    assert torch.equal(data.x_test, digits.x_test) and torch.equal(data.y_test, digits.y_test)
    assert data.spec.input_shape == (1, 8, 8) and data.spec.num_classes == 10 and data.spec.bounds == (0.0, 1.0)
    assert len(data.provenance.sha256) == 64 and data.provenance.n_test == len(digits.y_test)
    again = load_dataset(str(path))
    assert again.provenance.sha256 == data.provenance.sha256
    np.savez(path, x=digits.x_test.numpy()[:-1], y=digits.y_test.numpy()[:-1])
    assert load_dataset(str(path)).provenance.sha256 != data.provenance.sha256


def test_npz_uint8_is_scaled_and_recorded(tmp_path: Path) -> None:
    x = np.random.default_rng(0).integers(0, 256, size=(20, 1, 4, 4), dtype=np.uint8)
    np.savez(tmp_path / "u8.npz", x_test=x, y_test=np.arange(20) % 2)
    data = load_dataset(str(tmp_path / "u8.npz"))
    assert float(data.x_test.max()) <= 1.0 and "divided by 255" in data.provenance.preprocessing


def test_npz_refuses_pickles_and_missing_arrays(tmp_path: Path) -> None:
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}], dtype=object), y=np.array([0]))
    with pytest.raises(InputValidationError, match="without pickled objects"):
        load_dataset(str(tmp_path / "obj.npz"))
    np.savez(tmp_path / "wrong.npz", inputs=np.zeros((2, 3)), labels=np.zeros(2))
    with pytest.raises(InputValidationError, match="needs x and y"):
        load_dataset(str(tmp_path / "wrong.npz"))


def test_csv_with_named_label_column(tmp_path: Path) -> None:
    rows = ["a,b,diagnosis,c"] + [f"{i / 10},{1 - i / 10},{'sick' if i % 2 else 'well'},0.5" for i in range(10)]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    data = load_dataset(str(tmp_path / "t.csv"), options=DataOptions(label_column="diagnosis"))
    assert data.spec.input_shape == (3,) and data.spec.class_names == ("sick", "well")
    assert data.y_test.tolist() == [1, 0] * 5
    with pytest.raises(InputValidationError, match=r"no column 'label'.*--label-column"):
        load_dataset(str(tmp_path / "t.csv"))
    (tmp_path / "bad.csv").write_text("a,label\nx,0\n1,1\n")
    with pytest.raises(InputValidationError, match="column 'a' holds values that are not numbers"):
        load_dataset(str(tmp_path / "bad.csv"))


def test_csv_outside_unit_range_takes_bounds_from_data_or_flag(tmp_path: Path) -> None:
    (tmp_path / "w.csv").write_text("f,label\n-3,0\n5,1\n")
    data = load_dataset(str(tmp_path / "w.csv"))
    assert data.spec.bounds == (-3.0, 5.0) and "bounds taken from the data" in data.provenance.preprocessing
    with pytest.raises(InputValidationError, match="nothing is clipped"):
        load_dataset(str(tmp_path / "w.csv"), options=DataOptions(bounds=(0.0, 1.0)))


def test_image_folder_resizes_and_records_it(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(3):
            size = (8, 8) if i else (16, 12)
            Image.fromarray(rng.integers(0, 256, size=size, dtype=np.uint8)).save(tmp_path / "imgs" / c / f"{i}.png")
    data = load_dataset(str(tmp_path / "imgs"), options=DataOptions(image_size=(8, 8)))
    assert tuple(data.x_test.shape) == (6, 1, 8, 8) and data.spec.class_names == ("cat", "dog")
    assert data.y_test.tolist() == [0, 0, 0, 1, 1, 1]
    assert "2 of 6 images resized to 8x8" in data.provenance.preprocessing
    rgb = load_dataset(str(tmp_path / "imgs"), options=DataOptions(image_size=(8, 8), channels=3))
    assert tuple(rgb.x_test.shape) == (6, 3, 8, 8)


def test_missing_path_and_bad_options(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no dataset"):
        load_dataset(str(tmp_path / "nothing.npz"))
    with pytest.raises(ConfigError, match="scale must be"):
        DataOptions(scale=0)
    (tmp_path / "one").mkdir()
    with pytest.raises(InputValidationError, match="one sub-folder per class"):
        load_dataset(str(tmp_path / "one"))
