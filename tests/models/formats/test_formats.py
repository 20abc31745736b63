"""Loading a user's model files: every supported format, refusals for pickles, and spec checks against the data."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from bastion.data import Dataset
from bastion.errors import ArtifactError, ConfigError
from bastion.models import TorchClassifier, predict_labels
from bastion.models.formats import SpecHints, detect_format, load_classifier
from bastion.models.zoo import TrainedModel

ARCH = "tests.conftest:digits_cnn_factory"


def _load(path: Path, digits: Dataset, **kw: object):  # type: ignore[no-untyped-def]
    return load_classifier(path, hints=SpecHints.from_spec(digits.spec), check_inputs=digits.x_test, **kw)


@pytest.mark.parametrize(
    ("key", "fmt"),
    [
        ("onnx", "onnx"),
        ("pt2", "torch-export"),
        ("torchscript", "torchscript"),
        ("safetensors", "safetensors"),
        ("skops", "skops"),
        ("pickle", "pickle"),
        ("torch-save", "pickle"),
    ],
)
def test_formats_are_detected_by_content(user_models: dict[str, Path], key: str, fmt: str, tmp_path: Path) -> None:
    assert detect_format(user_models[key]) == fmt
    renamed = tmp_path / "model.onnx"  # the extension never decides
    shutil.copy(user_models[key], renamed)
    assert detect_format(renamed) == fmt


@pytest.mark.parametrize("key", ["onnx", "pt2", "torchscript", "safetensors"])
def test_torch_formats_predict_like_the_original(
    user_models: dict[str, Path], key: str, digits: Dataset, digits_model: TrainedModel
) -> None:
    loaded = _load(user_models[key], digits, arch=ARCH if key == "safetensors" else None)
    assert loaded.access == "white-box"
    assert isinstance(loaded.classifier, TorchClassifier)
    want = predict_labels(digits_model.classifier, digits.x_test)
    assert torch.equal(predict_labels(loaded.classifier, digits.x_test), want)
    x = digits.x_test[:16].clone().requires_grad_(True)
    loaded.classifier.logits(x).sum().backward()  # gradients flow: white-box attacks can run
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    assert loaded.classifier.spec.input_shape == (1, 8, 8) and loaded.classifier.spec.num_classes == 10


def test_onnx_black_box_path_agrees_and_says_so(user_models: dict[str, Path], digits: Dataset) -> None:
    white = _load(user_models["onnx"], digits)
    black = _load(user_models["onnx"], digits, white_box=False)
    assert black.access == "black-box" and "onnxruntime" in black.notes[0]
    assert "onnx2torch" in white.notes[0]
    assert torch.equal(predict_labels(white.classifier, digits.x_test), predict_labels(black.classifier, digits.x_test))
    assert black.info()["format"] == "onnx" and len(black.info()["sha256"]) == 64


def test_onnx_spec_comes_from_the_graph(user_models: dict[str, Path]) -> None:
    loaded = load_classifier(user_models["onnx"])  # no data, no flags: the graph states shape and classes
    assert loaded.classifier.spec.input_shape == (1, 8, 8)
    assert loaded.classifier.spec.num_classes == 10


def test_skops_model_loads_black_box(user_models: dict[str, Path], digits: Dataset) -> None:
    loaded = _load(user_models["skops"], digits)
    assert loaded.access == "black-box" and loaded.format == "skops"
    acc = float((predict_labels(loaded.classifier, digits.x_test) == digits.y_test).float().mean())
    assert acc > 0.9
    assert loaded.classifier.spec.input_shape == (1, 8, 8)  # flattened estimator, images kept in the data's shape


@pytest.mark.parametrize("key", ["pickle", "torch-save"])
def test_pickles_are_refused_with_what_to_convert_to(user_models: dict[str, Path], key: str, digits: Dataset) -> None:
    with pytest.raises(ArtifactError, match=r"pickle.*never loads.*skops\.io\.dump"):
        _load(user_models[key], digits)


def test_class_count_mismatch_is_an_error(user_models: dict[str, Path], digits: Dataset) -> None:
    hints = SpecHints(input_shape=(1, 8, 8), num_classes=3)
    for key in ("onnx", "pt2", "torchscript"):
        with pytest.raises(ArtifactError, match="10 outputs but the data has 3 classes"):
            load_classifier(user_models[key], hints=hints)


def test_shape_mismatch_and_missing_shape_are_errors(user_models: dict[str, Path]) -> None:
    with pytest.raises(ArtifactError, match=r"shape \(\?, 1, 8, 8\)|shape \(1, 8, 8\)"):
        load_classifier(user_models["onnx"], hints=SpecHints(input_shape=(1, 28, 28)))
    with pytest.raises(ArtifactError, match="--input-shape"):
        load_classifier(user_models["torchscript"])  # TorchScript states no shape


def test_bare_safetensors_needs_arch_and_a_matching_one(user_models: dict[str, Path], digits: Dataset) -> None:
    with pytest.raises(ArtifactError, match="--arch"):
        _load(user_models["safetensors"], digits)
    with pytest.raises(ConfigError, match=r"package\.module:factory"):
        _load(user_models["safetensors"], digits, arch="nocolon")
    with pytest.raises(ConfigError, match="cannot import"):
        _load(user_models["safetensors"], digits, arch="no_such_module_x:f")
    with pytest.raises(ArtifactError, match="do not fit"):
        _load(user_models["safetensors"], digits, arch="tests.conftest:tiny_wrong_factory")


def test_unknown_and_missing_files(tmp_path: Path) -> None:
    junk = tmp_path / "model.onnx"
    junk.write_bytes(b"\x08\x01garbage that is not a protobuf model")
    with pytest.raises(ArtifactError, match="not a model file Bastion can read"):
        load_classifier(junk)
    with pytest.raises(ArtifactError, match="does not exist"):
        load_classifier(tmp_path / "nothing.onnx")


def test_an_onnx_graph_without_a_torch_conversion_runs_black_box(digits: Dataset, tmp_path: Path) -> None:
    """ThresholdedRelu has no onnx2torch converter, but onnxruntime runs it: the model is assessed black-box and the
    notes say why."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).normal(size=(64, 10)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["x"], ["flat"]),
            helper.make_node("MatMul", ["flat", "w"], ["z"]),
            helper.make_node("ThresholdedRelu", ["z"], ["logits"], alpha=0.1),
        ],
        "linear-thresholded",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, 10])],
        [numpy_helper.from_array(w, "w")],
    )
    path = tmp_path / "thresholded.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    loaded = _load(path, digits)
    assert loaded.access == "black-box" and "could not be converted" in loaded.notes[0]
    x = digits.x_test[:20]
    want = np.maximum(x.flatten(1).numpy() @ w, 0) * (x.flatten(1).numpy() @ w > 0.1)
    assert np.allclose(loaded.classifier.predict_logits(x).numpy(), want, atol=1e-5)
