"""Model cards and the safetensors + JSON artifact format: no pickle, and weights checked against their card."""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save_file
from torch import nn

from bastion._version import __version__
from bastion.errors import ArtifactError, IntegrityError
from bastion.models.torch import TorchClassifier
from bastion.models.zoo.nets import build
from bastion.types import ModelSpec

CARD_FORMAT = 1


@dataclass(frozen=True)
class ModelCard:
    """Everything needed to rebuild, trust and describe a trained model."""

    name: str
    architecture: str
    arch_params: dict[str, Any]
    spec: ModelSpec
    dataset: dict[str, Any]
    seed: int
    epochs: int
    clean_accuracy: float
    training: dict[str, Any] = field(default_factory=dict)
    normalization: tuple[list[float], list[float]] | None = None
    weights_sha256: str = ""
    weights_file: str = ""
    created: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    format: int = CARD_FORMAT

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["spec"] = self.spec.to_dict()
        d["normalization"] = list(self.normalization) if self.normalization else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelCard:
        required = ["name", "architecture", "spec", "dataset", "seed", "epochs", "clean_accuracy", "weights_sha256"]
        missing = [k for k in required if k not in d]
        if missing:
            raise ArtifactError(f"model card lacks the fields: {', '.join(missing)}")
        if d.get("format", CARD_FORMAT) != CARD_FORMAT:
            raise ArtifactError(
                f"model card format {d.get('format')} is not supported (this Bastion reads {CARD_FORMAT})"
            )
        try:
            norm = d.get("normalization")
            return cls(
                name=str(d["name"]),
                architecture=str(d["architecture"]),
                arch_params=dict(d.get("arch_params") or {}),
                spec=ModelSpec.from_dict(d["spec"]),
                dataset=dict(d["dataset"]),
                seed=int(d["seed"]),
                epochs=int(d["epochs"]),
                clean_accuracy=float(d["clean_accuracy"]),
                training=dict(d.get("training") or {}),
                normalization=(list(norm[0]), list(norm[1])) if norm else None,
                weights_sha256=str(d["weights_sha256"]),
                weights_file=str(d.get("weights_file", "")),
                created=str(d.get("created", "")),
                versions=dict(d.get("versions") or {}),
            )
        except (TypeError, ValueError, KeyError) as e:
            raise ArtifactError(f"model card has a malformed field: {e}") from None


def dataset_record(dataset: Any) -> dict[str, Any]:
    """What a card records of the data a model was trained on: the dataset's name and digest, the size of the
    training split it was given and a digest of exactly those training arrays (a subset of a dataset keeps the
    dataset's digest, so only ``train_sha256`` says which points were members)."""
    p = dataset.provenance
    return {
        "name": dataset.name,
        "sha256": p.sha256,
        "n_train": int(dataset.x_train.shape[0]),
        "n_test": int(dataset.x_test.shape[0]),
        "train_sha256": training_digest(dataset.x_train, dataset.y_train),
    }


def training_digest(x: torch.Tensor, y: torch.Tensor) -> str:
    """sha256 over the shapes, dtypes and bytes of a training split's inputs and labels."""
    from bastion.data.base import fingerprint

    return fingerprint({"x_train": x.contiguous().numpy(), "y_train": y.contiguous().numpy()})[0]


def card_path(weights: Path) -> Path:
    """The card that goes with a weights file: ``model.safetensors`` → ``model.json``."""
    return weights.with_suffix(".json")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def runtime_versions() -> dict[str, str]:
    return {"bastion": __version__, "torch": torch.__version__, "python": platform.python_version()}


def save_model(module: nn.Module, card: ModelCard, path: str | Path) -> ModelCard:
    """Write ``path`` (safetensors) and its JSON card; returns the card completed with the weights' sha256."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ArtifactError(f"model files end in .safetensors, got {path.name!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    save_file(state, str(path), metadata={"format": "pt"})
    done = ModelCard(**{**card.__dict__, "weights_sha256": sha256_file(path), "weights_file": path.name})
    card_path(path).write_text(json.dumps(done.to_dict(), indent=2, sort_keys=True) + "\n")
    return done


def read_card(path: str | Path) -> ModelCard:
    """Read and validate the card of weights file ``path``."""
    cp = card_path(Path(path))
    if not cp.is_file():
        raise ArtifactError(
            f"no model card {cp} next to {Path(path).name}; Bastion models are saved by `bastion train`"
        )
    try:
        data = json.loads(cp.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"model card {cp} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ArtifactError(f"model card {cp} must hold a JSON object")
    return ModelCard.from_dict(data)


@dataclass(frozen=True)
class LoadedModel:
    """A model read from disk: the module, its card and a ready white-box classifier."""

    module: nn.Module
    card: ModelCard
    classifier: TorchClassifier


def load_model(path: str | Path, *, device: str | torch.device | None = None) -> LoadedModel:
    """Load a zoo model, refusing weights whose sha256 differs from the card's."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"model file {path} does not exist")
    if path.suffix != ".safetensors":
        raise ArtifactError(f"{path.name} is not a .safetensors file; Bastion never loads pickled models")
    card = read_card(path)
    raw = path.read_bytes()
    actual = hashlib.sha256(raw).hexdigest()
    if actual != card.weights_sha256:
        raise IntegrityError(
            f"weights {path.name} have sha256 {actual[:16]}… but the card records {card.weights_sha256[:16]}…; "
            "the file was changed or does not belong to this card — refusing to load it"
        )
    try:
        state = load_safetensors_bytes(raw)
    except (SafetensorError, ValueError) as e:
        raise ArtifactError(f"{path.name} is not a valid safetensors file: {e}") from None
    module = build(card.architecture, card.spec.input_shape, card.spec.num_classes, card.arch_params)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ArtifactError(f"weights in {path.name} do not fit architecture {card.architecture!r}: {e}") from None
    module.eval()
    norm = card.normalization
    clf = TorchClassifier(module, card.spec, normalization=(norm[0], norm[1]) if norm else None, device=device)
    return LoadedModel(module=module, card=card, classifier=clf)
