"""Reading the model and data a user names on the command line: flags to hints and options, one error per problem."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from bastion.errors import ConfigError

if TYPE_CHECKING:  # the data and model stacks (torch, onnx, ...) load only when a command reads a model
    from bastion.data import Dataset
    from bastion.models.formats import LoadedClassifier

ArchOpt = Annotated[
    str | None,
    typer.Option(help="package.module:factory building the nn.Module for bare .safetensors weights (code you trust)"),
]
TrustOpt = Annotated[list[str] | None, typer.Option("--trust", help="a skops type you trust (repeatable)")]
BlackBoxOpt = Annotated[bool, typer.Option("--black-box", help="run an ONNX model through onnxruntime only")]
ShapeOpt = Annotated[str | None, typer.Option(help="shape of one input, e.g. 1,28,28 (when model and data don't say)")]
BoundsOpt = Annotated[str | None, typer.Option(help="valid input range LOW,HIGH (default: [0,1] or the data's range)")]
LabelOpt = Annotated[str, typer.Option(help="CSV data: the column holding the labels")]
SizeOpt = Annotated[str | None, typer.Option(help="image-folder data: resize images to HEIGHTxWIDTH, e.g. 28x28")]
ChannelsOpt = Annotated[int | None, typer.Option(help="image-folder data: 1 (grayscale) or 3 (RGB)")]
ScaleOpt = Annotated[float | None, typer.Option(help="divide input values by this (default 255 for images / uint8)")]


def parse_ints(text: str | None, flag: str, *, sep: str = ",") -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        vals = tuple(int(v) for v in text.replace(" ", "").split(sep))
    except ValueError:
        vals = ()
    if not vals or any(v < 1 for v in vals):
        example = "28x28" if sep == "x" else "1,28,28"
        raise ConfigError(f"{flag} must be positive integers separated by '{sep}', e.g. {example}; got {text!r}")
    return vals


def parse_bounds(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"--bounds must be LOW,HIGH, e.g. 0,1; got {text!r}") from None
    if not lo < hi:
        raise ConfigError(f"--bounds needs LOW < HIGH, got {text!r}")
    return lo, hi


def read_data(
    name: str,
    *,
    data_path: Path | None = None,
    label_column: str = "label",
    image_size: str | None = None,
    channels: int | None = None,
    scale: float | None = None,
    bounds: str | None = None,
    input_shape: str | None = None,
) -> Dataset:
    """A built-in dataset by name, or the user's .npz / CSV / image folder read with the given options."""
    from bastion.data import DATASETS, load_dataset
    from bastion.data.files import DataOptions

    if name.lower() in DATASETS.names():
        given = [
            flag
            for flag, value in (
                ("--label-column", label_column != "label"),
                ("--image-size", image_size is not None),
                ("--channels", channels is not None),
                ("--scale", scale is not None),
                ("--bounds", bounds is not None),
                ("--input-shape", input_shape is not None),
            )
            if value
        ]
        if given:
            raise ConfigError(
                f"{', '.join(given)} describe(s) a data file, but {name} is a built-in dataset with its own format; "
                "drop the flag(s) or pass the path of your .npz, CSV or image folder"
            )
        return load_dataset(name, **({"path": data_path} if data_path is not None else {}))
    if data_path is not None:
        raise ConfigError(f"--data-path locates the files of a built-in dataset; {name!r} is not one")
    size = parse_ints(image_size, "--image-size", sep="x")
    if size is not None and len(size) != 2:
        raise ConfigError(f"--image-size must be HEIGHTxWIDTH, e.g. 28x28; got {image_size!r}")
    opts = DataOptions(
        label_column=label_column,
        image_size=(size[0], size[1]) if size else None,
        channels=channels,
        scale=scale,
        bounds=parse_bounds(bounds),
        input_shape=parse_ints(input_shape, "--input-shape"),
    )
    return load_dataset(name, options=opts)


def card_dataset(model: Path) -> str | None:
    """The dataset a Bastion zoo model's card names, if ``model`` is one."""
    from bastion.models.formats import detect_format
    from bastion.models.zoo.card import read_card

    if model.is_file() and detect_format(model) == "safetensors" and model.with_suffix(".json").is_file():
        return str(read_card(model).dataset.get("name") or "") or None
    return None


def read_model(
    model: Path,
    dataset: Dataset,
    *,
    arch: str | None = None,
    trust: list[str] | None = None,
    black_box: bool = False,
    input_shape: str | None = None,
    bounds: str | None = None,
) -> LoadedClassifier:
    """Load ``model`` for ``dataset``: the data's shape, classes and bounds are the hints the file must agree with."""
    from bastion.models.formats import SpecHints, load_classifier

    flags = SpecHints(input_shape=parse_ints(input_shape, "--input-shape"), bounds=parse_bounds(bounds))
    hints = flags.over(SpecHints.from_spec(dataset.spec))
    return load_classifier(
        model,
        hints=hints,
        arch=arch,
        trusted_types=trust or (),
        white_box=not black_box,
        check_inputs=dataset.x_test,
    )
