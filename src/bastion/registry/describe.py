"""What a file or folder is, as a registry artifact: its files, format, name, and what it says about its lineage.

Bastion's own outputs carry their history beside them, and registration reads it instead of asking the user again:

- a model's card (``model.json`` beside ``model.safetensors``) names the data it was trained on (a dataset digest),
  its training recipe, and, for a hardened model, the file it was hardened from (``hardened_from``/``replaces``) and
  the DP budget; a ``.hardening.json`` beside a ``.pt2`` says the same for a model without a card;
- a cleaned dataset's ``.cleaning.json`` names the source dataset's digest and every removed row;
- an assess report's ``results.json`` names the model it assessed (sha256), its policy and the gate's verdict.

Lineage is returned as hints (a digest to look up); :class:`bastion.registry.Registry` turns them into artifact ids.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bastion.errors import ArtifactError, ConfigError
from bastion.registry.digest import sha256_file
from bastion.registry.manifest import Kind
from bastion.registry.scan import require_loadable


@dataclass(frozen=True)
class ParentHint:
    """A parent to find in the registry: a dataset by digest, or a model by the sha256 of one of its files."""

    role: str
    kind: Kind
    digest: str
    label: str  # what the user is told when it cannot be found


@dataclass(frozen=True)
class Description:
    kind: Kind
    name: str
    format: str
    files: dict[str, Path]  # name inside the artifact -> source path
    primary: str | None = None  # the file a loader opens (a model's weights, a dataset's data file)
    transformation: str = "register"
    settings: dict[str, Any] = field(default_factory=dict)
    dataset_digest: str | None = None
    dataset_digests: tuple[str, ...] = ()  # every digest this dataset is known by (for datasets)
    training: dict[str, Any] = field(default_factory=dict)
    privacy: dict[str, Any] | None = None
    cleaning: dict[str, Any] | None = None
    assessment: dict[str, Any] | None = None
    parents: tuple[ParentHint, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    generated: dict[str, bytes] = field(default_factory=dict)  # files made here (a built-in dataset's arrays)


def describe_model(path: Path) -> Description:
    """A model file Bastion loads, with its card or hardening record when they sit beside it."""
    from bastion.models.formats.sniff import detect_format

    if not path.is_file():
        raise ArtifactError(f"model file {path} does not exist")
    fmt: str = detect_format(path)
    if fmt == "pickle":
        require_loadable(path)  # a malicious pickle gets the scanner's reason; a clean one the conversion hint
        raise ArtifactError(
            f"{path.name} is a pickle; Bastion registers no pickle. Convert a clean torch checkpoint with "
            f"`bastion registry import {path} --convert --arch package.module:factory`"
        )
    if fmt == "unknown":
        raise ArtifactError(
            f"{path.name} is not a model file Bastion can read (safetensors with a card or --arch, ONNX, torch.export, "
            "TorchScript, skops)"
        )
    files = {path.name: path}
    training: dict[str, Any] = {}
    parents: list[ParentHint] = []
    name = path.stem
    dataset_digest = None
    transformation, settings = "register", {}
    privacy = None
    card_file = path.with_suffix(".json")
    record: dict[str, Any] | None = None
    if fmt == "safetensors" and card_file.is_file():
        from bastion.models.zoo.card import read_card

        card = read_card(path)
        actual = sha256_file(path)
        if actual != card.weights_sha256:
            raise ArtifactError(
                f"{path.name} has sha256 {actual[:16]}… but its card records {card.weights_sha256[:16]}…; the weights "
                "changed after they were saved, so they cannot be registered as that model"
            )
        files[card_file.name] = card_file
        fmt = "bastion-safetensors"
        name = card.name
        training = dict(card.training)
        dataset_digest = str(card.dataset.get("sha256") or "") or None
        if dataset_digest:
            parents.append(ParentHint("dataset", "dataset", dataset_digest, f"{card.dataset.get('name')} data"))
        record = card.training
        transformation = "train"
        settings = {
            "architecture": card.architecture,
            "seed": card.seed,
            "epochs": card.epochs,
            "clean_accuracy": card.clean_accuracy,
        }
    side = path.with_name(path.stem + ".hardening.json")
    if side.is_file():
        try:
            record = json.loads(side.read_text())
        except (OSError, ValueError) as e:
            raise ArtifactError(f"{side.name} is not valid JSON: {e}") from None
        files[side.name] = side
        training = dict(record or {})
    if record:
        source = record.get("hardened_from") or record.get("replaces")
        if isinstance(source, dict) and source.get("sha256"):
            parents.append(ParentHint("model", "model", str(source["sha256"]), f"the model {source.get('file')}"))
        if record.get("method"):
            transformation = "harden"
            settings = {"method": record.get("method"), **dict(record.get("settings") or {})}
        if isinstance(record.get("privacy"), dict):
            privacy = dict(record["privacy"])
        if record.get("cleaning_record"):
            settings["cleaning_record"] = str(record["cleaning_record"])
    training.pop("history", None)  # per-epoch curves belong in the card, not the manifest
    return Description(
        kind="model",
        name=name,
        format=fmt,
        files=files,
        primary=path.name,
        transformation=transformation,
        settings=settings,
        dataset_digest=dataset_digest,
        training=training,
        privacy=privacy,
        parents=tuple(parents),
    )


def describe_dataset(source: str) -> Description:
    """A built-in dataset (by name), an ``.npz``, a CSV file or an image folder; with its cleaning record if any."""
    from bastion.data import DATASETS, load_dataset
    from bastion.data.files import load_data_path
    from bastion.models.zoo.card import training_digest

    path = Path(source)
    generated: dict[str, bytes] = {}
    cleaning = None
    parents: list[ParentHint] = []
    transformation, settings = "register", {}
    extra: dict[str, Any] = {}
    if not path.exists() and source in DATASETS.names():
        dataset = load_dataset(source)
        import io

        buf = io.BytesIO()
        arrays = {
            "x_train": dataset.x_train.numpy(),
            "y_train": dataset.y_train.numpy(),
            "x_test": dataset.x_test.numpy(),
            "y_test": dataset.y_test.numpy(),
        }
        np.savez(buf, **arrays)  # type: ignore[arg-type]
        generated[f"{source}.npz"] = buf.getvalue()
        from bastion.data.base import fingerprint

        digests: tuple[str, ...] = (dataset.provenance.sha256, fingerprint(arrays)[0])
        extra["built_in"] = {"name": source, "provenance": dataset.provenance.to_dict()}
        files: dict[str, Path] = {}
        name, fmt, primary = source, "npz", f"{source}.npz"
    elif path.exists():
        dataset = load_data_path(path)
        digests = (dataset.provenance.sha256,)
        if path.is_dir():
            files = {p.relative_to(path.parent).as_posix(): p for p in sorted(path.rglob("*")) if p.is_file()}
            fmt, primary = "image-folder", path.name
        else:
            files = {path.name: path}
            fmt, primary = path.suffix.lower().lstrip("."), path.name
            record_file = path.with_suffix(".cleaning.json")
            if record_file.is_file():
                try:
                    cleaning = json.loads(record_file.read_text())
                except (OSError, ValueError) as e:
                    raise ArtifactError(f"{record_file.name} is not valid JSON: {e}") from None
                files[record_file.name] = record_file
                src = (cleaning.get("source") or {}).get("sha256")
                if src:
                    parents.append(ParentHint("source", "dataset", str(src), "the dataset it was cleaned from"))
                transformation = "clean"
                settings = {k: cleaning[k] for k in ("action", "removed_by", "check_settings") if k in cleaning}
                cleaning = {k: v for k, v in cleaning.items() if k != "rows"}  # the removed rows stay in the file
        name = path.stem if path.is_file() else path.name
    else:
        raise ConfigError(
            f"{source} is neither a file or folder nor a built-in dataset ({', '.join(DATASETS.names())})"
        )
    split = training_digest(dataset.x_train, dataset.y_train)
    return Description(
        kind="dataset",
        name=name,
        format=fmt,
        files=files,
        primary=primary,
        transformation=transformation,
        settings=settings,
        dataset_digest=digests[0],
        dataset_digests=(*digests, split),
        cleaning=cleaning,
        parents=tuple(parents),
        extra={
            **extra,
            "rows": {"train": int(dataset.x_train.shape[0]), "test": int(dataset.x_test.shape[0])},
            "classes": dataset.spec.num_classes,
            "input_shape": list(dataset.spec.input_shape),
        },
        generated=generated,
    )


def assessment_summary(results: Path) -> tuple[dict[str, Any], str]:
    """The summary of an assess run (policy, verdict, clean accuracy) and the sha256 of the model it assessed."""
    f = results / "results.json" if results.is_dir() else results
    try:
        d = json.loads(f.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{f} does not exist; pass an assess report folder or its results.json") from None
    except (OSError, ValueError) as e:
        raise ConfigError(f"{f} is not a readable results.json: {e}") from None
    try:
        model_sha = str(d["model"]["sha256"])
        gate = d["gate"]
        summary = {
            "title": d.get("title"),
            "created": d.get("created"),
            "policy": (d.get("policy") or {}).get("name"),
            "verdict": gate["status"],
            "reasons": list(gate.get("reasons") or []),
            "clean_accuracy": d.get("clean_accuracy"),
            "results_sha256": sha256_file(f),
        }
    except (KeyError, TypeError) as e:
        raise ConfigError(f"{f} is not the results.json of `bastion assess` (missing {e})") from None
    return summary, model_sha


def describe_report(folder: Path) -> Description:
    """An assess report folder (its results.json names the model it assessed)."""
    if not folder.is_dir():
        raise ArtifactError(f"report {folder} is not a folder (pass the folder `bastion assess --out` wrote)")
    summary, model_sha = assessment_summary(folder)
    files = {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}
    return Description(
        kind="report",
        name=folder.name,
        format="assess-report",
        files=files,
        primary="results.json",
        transformation="assess",
        assessment=summary,
        parents=(ParentHint("assessed", "model", model_sha, "the model it assessed"),),
    )
