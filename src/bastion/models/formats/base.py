"""What every model-file loader returns, and how a model's spec is put together from the model, the data and flags."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from bastion._torch import eval_mode
from bastion.errors import ArtifactError, ConfigError
from bastion.models.base import Classifier
from bastion.types import Bounds, ModelSpec

Access = Literal["white-box", "black-box"]


@dataclass(frozen=True)
class SpecHints:
    """What is known about a model's contract from outside the file (the data, or the user's flags).

    Every field may be ``None`` (unknown). A model file that states a value itself (an ONNX graph's input shape,
    a skops estimator's classes) must agree with a hint, or loading fails: a silent disagreement would make every
    figure meaningless.
    """

    input_shape: tuple[int, ...] | None = None
    num_classes: int | None = None
    bounds: Bounds | None = None
    class_names: tuple[str, ...] | None = None

    @classmethod
    def from_spec(cls, spec: ModelSpec) -> SpecHints:
        return cls(spec.input_shape, spec.num_classes, spec.bounds, spec.class_names)

    def over(self, other: SpecHints) -> SpecHints:
        """These hints where set, ``other``'s elsewhere."""
        return SpecHints(
            self.input_shape if self.input_shape is not None else other.input_shape,
            self.num_classes if self.num_classes is not None else other.num_classes,
            self.bounds if self.bounds is not None else other.bounds,
            self.class_names if self.class_names is not None else other.class_names,
        )


@dataclass(frozen=True)
class LoadContext:
    """Everything a loader may use besides the file: hints, the user's architecture factory, trusted types."""

    hints: SpecHints = SpecHints()
    arch: str | None = None
    trusted_types: tuple[str, ...] = ()
    white_box: bool = True
    device: str | torch.device | None = None
    check_inputs: torch.Tensor | None = None


@dataclass(frozen=True)
class LoadedClassifier:
    """A model read from a file: a ready classifier plus what the report needs to say about where it came from.

    ``access`` is "white-box" when gradients are available (a torch module, or an ONNX graph converted to one) and
    "black-box" otherwise; ``notes`` say how the file was read (e.g. which ONNX path ran and why).
    """

    classifier: Classifier
    format: str
    access: Access
    path: Path
    sha256: str
    name: str
    notes: tuple[str, ...] = ()
    card: Any = None  # a zoo ModelCard for Bastion's own safetensors + card files
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def dataset_name(self) -> str | None:
        """The dataset the model was trained on, when its file says so (zoo cards do)."""
        if self.card is not None:
            return str(self.card.dataset.get("name") or "") or None
        return None

    def info(self) -> dict[str, Any]:
        """Plain data for the report and ``results.json``."""
        d: dict[str, Any] = {
            "name": self.name,
            "format": self.format,
            "access": self.access,
            "path": str(self.path),
            "sha256": self.sha256,
            "spec": self.classifier.spec.to_dict(),
            "notes": list(self.notes),
            **self.extra,
        }
        if self.card is not None:
            d["card"] = self.card.to_dict()
            d["dataset"] = self.card.dataset
        return d

    def __repr__(self) -> str:
        return (
            f"LoadedClassifier({self.name!r}, format={self.format}, access={self.access}, sha256={self.sha256[:12]}…)"
        )


def resolve_spec(
    hints: SpecHints,
    *,
    source: str,
    input_shape: tuple[int | None, ...] | None = None,
    num_classes: int | None = None,
    class_names: tuple[str, ...] | None = None,
) -> ModelSpec:
    """Join what the model file says (``input_shape`` may hold ``None`` for symbolic axes) with the hints.

    The file wins where it is definite; a hint fills the rest; a disagreement is an error naming both values.
    """
    problems = []
    shape: tuple[int, ...] | None = hints.input_shape
    if input_shape is not None:
        if hints.input_shape is not None:
            want = hints.input_shape
            if len(want) != len(input_shape) or any(
                d is not None and d != w for d, w in zip(input_shape, want, strict=True)
            ):
                problems.append(
                    f"{source} takes inputs of shape {_fmt(input_shape)} but the data (or --input-shape) gives "
                    f"{want}; reshape the data or pass the right --input-shape"
                )
        elif any(d is None for d in input_shape):
            problems.append(
                f"{source} has symbolic input dimensions {_fmt(input_shape)}; give the data or --input-shape "
                "(input_shape in a gateway model entry)"
            )
        else:
            shape = tuple(int(d) for d in input_shape if d is not None)
    if shape is None:
        problems.append(
            f"{source} does not state its input shape; give the data, or --input-shape 1,28,28 on the command line "
            "(input_shape: [1, 28, 28] in a gateway model entry)"
        )
    classes = hints.num_classes
    if num_classes is not None:
        if classes is not None and classes != num_classes:
            problems.append(
                f"{source} has {num_classes} outputs but the data has {classes} classes; assess it on the data it "
                "was trained for"
            )
        classes = num_classes
    if classes is None:
        problems.append(
            f"{source} does not state its number of classes; give the data it classifies (or class_names in a gateway config)"
        )
    names = hints.class_names
    if class_names is not None and (names is None or len(names) != len(class_names)):
        names = class_names
    if problems:
        raise ArtifactError(f"cannot use {source}", problems=problems)
    assert shape is not None and classes is not None
    if names is not None and len(names) != classes:
        names = None
    return ModelSpec(shape, classes, hints.bounds or (0.0, 1.0), names or ())


def _fmt(shape: tuple[int | None, ...]) -> str:
    inner = ", ".join("?" if d is None else str(d) for d in shape)
    return f"({inner},)" if len(shape) == 1 else f"({inner})"


def output_width(module: nn.Module, input_shape: tuple[int, ...], device: torch.device, source: str) -> int:
    """Run one input of zeros through ``module`` and return the width of its (N, K) output."""
    x = torch.zeros((1, *input_shape), device=device)
    try:
        with torch.no_grad(), eval_mode(module):
            y = module(x)
    except Exception as e:  # a user's module can raise anything on a wrong shape
        raise ArtifactError(
            f"{source} fails on an input of shape {input_shape}: {type(e).__name__}: {str(e).splitlines()[0]}; "
            "check --input-shape against the model"
        ) from None
    if not isinstance(y, torch.Tensor) or y.dim() != 2:
        raise ArtifactError(
            f"{source} must return a (N, K) tensor of scores, got "
            f"{tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__}"
        )
    return int(y.shape[1])


def check_width(width: int, spec: ModelSpec, source: str) -> None:
    if width != spec.num_classes:
        raise ArtifactError(
            f"{source} has {width} outputs but the data has {spec.num_classes} classes; assess it on the data it "
            "was trained for"
        )


def sample_inputs(spec: ModelSpec, given: torch.Tensor | None, n: int = 64, seed: int = 0) -> torch.Tensor:
    """Inputs to compare two ways of running one model: the caller's data, else uniform noise within bounds."""
    if given is not None and given.shape[1:] == spec.input_shape and given.shape[0] > 0:
        return given[:n].detach().cpu().float()
    g = torch.Generator().manual_seed(seed)
    lo, hi = spec.bounds
    return lo + (hi - lo) * torch.rand((n, *spec.input_shape), generator=g)


def require_module(obj: object, source: str) -> nn.Module:
    if not isinstance(obj, nn.Module):
        raise ConfigError(f"{source} must give a torch.nn.Module, got {type(obj).__name__}")
    return obj


def module_spec(
    module: nn.Module, hints: SpecHints, source: str, input_shape: tuple[int | None, ...] | None = None
) -> ModelSpec:
    """The spec of a torch module: shape from the file or hints, classes from one forward pass, checked against
    the hints (a model whose output width differs from the data's classes is an error)."""
    shape_only = resolve_spec(
        SpecHints(input_shape=hints.input_shape, num_classes=2), source=source, input_shape=input_shape
    )
    width = output_width(module, shape_only.input_shape, torch.device("cpu"), source)
    if hints.num_classes is not None and hints.num_classes != width:
        raise ArtifactError(
            f"{source} has {width} outputs but the data has {hints.num_classes} classes; assess it on the data it "
            "was trained for"
        )
    return resolve_spec(hints, source=source, input_shape=shape_only.input_shape, num_classes=width)
