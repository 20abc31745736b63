"""Shared fixtures: the digits data and a tiny reference CNN trained once per test session."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from bastion.data import Dataset, load_dataset
from bastion.models.zoo import TrainedModel, save_model, train_model

torch.set_num_threads(1)
os.environ.setdefault("BASTION_THREADS", "1")  # in-process CLI runs keep the tests' one thread
# trained similarity encoders (keyed by a digest of data and settings, so never stale) are shared by the workers and
# kept between runs on one machine; a clean CI machine trains each once
os.environ.setdefault("BASTION_CACHE_DIR", os.path.join(tempfile.gettempdir(), f"bastion-test-cache-{os.getuid()}"))


@pytest.fixture(scope="session")
def digits() -> Dataset:
    return load_dataset("digits")


@pytest.fixture(scope="session")
def digits_model(digits: Dataset) -> TrainedModel:
    """The digits reference CNN, 15 epochs, seed 0 (about 95% test accuracy, trained in a few seconds)."""
    return train_model(digits, epochs=15, seed=0)


@pytest.fixture(scope="session")
def digits_model_file(digits_model: TrainedModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("zoo") / "digits.safetensors"
    save_model(digits_model.module, digits_model.card, path)
    return path


@pytest.fixture()
def batch(digits: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """64 test inputs and labels."""
    return digits.x_test[:64].clone(), digits.y_test[:64].clone()


def digits_cnn_factory() -> torch.nn.Module:
    """An ``--arch`` factory for the tests: the digits reference CNN, untrained (weights come from safetensors)."""
    from bastion.models.zoo import build

    return build("digits-cnn", (1, 8, 8), 10, {})


@pytest.fixture(scope="session")
def user_models(
    digits: Dataset, digits_model: TrainedModel, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """The digits CNN as a user would bring it: ONNX, torch.export, TorchScript, bare safetensors; plus a
    scikit-learn model saved with skops and two pickles (which must be refused)."""
    import pickle

    import skops.io as sio
    from safetensors.torch import save_file
    from sklearn.linear_model import LogisticRegression

    root = tmp_path_factory.mktemp("user-models")
    net = digits_model.module.eval()
    x = digits.x_test[:4]
    paths = {
        "onnx": root / "digits.onnx",
        "pt2": root / "digits.pt2",
        "torchscript": root / "digits.ts",
        "safetensors": root / "digits-weights.safetensors",
        "skops": root / "digits-logreg.skops",
        "pickle": root / "digits.pkl",
        "torch-save": root / "digits-checkpoint.pt",
    }
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (x,),
            str(paths["onnx"]),
            dynamo=False,
            input_names=["x"],
            output_names=["logits"],
            dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}},
        )
        ep = torch.export.export(net, (x,), dynamic_shapes={"x": {0: torch.export.Dim("n", min=1, max=4096)}})
        torch.export.save(ep, str(paths["pt2"]))
        torch.jit.save(torch.jit.trace(net, x), str(paths["torchscript"]))
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(paths["safetensors"]))
    logreg = LogisticRegression(max_iter=500).fit(digits.x_train.flatten(1).numpy(), digits.y_train.numpy())
    sio.dump(logreg, str(paths["skops"]))
    paths["pickle"].write_bytes(pickle.dumps(logreg))
    torch.save(net.state_dict(), str(paths["torch-save"]))
    return paths


def tiny_wrong_factory() -> torch.nn.Module:
    """An ``--arch`` factory whose module does not fit the digits CNN's weights."""
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))


class Quantize(torch.nn.Module):
    """A 'defence' that rounds inputs to 4 levels: the gradient through it is zero almost everywhere (masking)."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(torch.round(x * 3) / 3)


POSTGRES_ADMIN_URL = os.environ.get("BASTION_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


@pytest.fixture()
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards. A server that cannot be reached is a
    failure, not a skip (scripts/services.sh starts one): every backend is tested, always."""
    import uuid

    import sqlalchemy as sa

    name = f"bastion_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as c:
            c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as e:
        admin.dispose()
        pytest.fail(f"PostgreSQL at {POSTGRES_ADMIN_URL} is not reachable ({e.orig}); run scripts/services.sh")
    try:
        yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
