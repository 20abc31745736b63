"""`bastion data check DATA` and `bastion data clean DATA --out CLEAN`: is a training set broken, duplicated,
mislabelled or poisoned, and what did cleaning remove?"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from bastion.cli._console import console
from bastion.cli._inputs import BoundsOpt, ChannelsOpt, LabelOpt, ScaleOpt, ShapeOpt, SizeOpt, read_data, read_model
from bastion.errors import ConfigError

data_app = typer.Typer(
    help="Check a training set and clean it, with a record of what was removed.", no_args_is_help=True
)

ChecksOpt = Annotated[
    str | None,
    typer.Option(
        help="comma-separated checks (default all): schema, range, duplicates, test-leakage, "
        "near-duplicates, class-balance, label-errors, poison, confusion"
    ),
]
DetectorOpt = Annotated[
    str, typer.Option(help="poison detector: projection-gap, spectral-signature, spectre, activation-clustering")
]
GapOpt = Annotated[
    float, typer.Option(help="poison decision rule: the empty band, in robust SDs, that marks a class attacked")
]
ModelOpt = Annotated[
    Path | None, typer.Option("--model", help="a torch model trained on DATA whose features the poison detector reads")
]
EpochsOpt = Annotated[
    int,
    typer.Option(help="at least this many epochs for the model Bastion trains for the poison detector (no --model)"),
]
SeedOpt = Annotated[int, typer.Option(help="seed of every model Bastion trains")]
TrustedOpt = Annotated[
    str | None,
    typer.Option(
        "--trusted",
        help="clean rows with correct labels (.npz / CSV / image folder, read like DATA) for the confusion check; "
        "default: up to 2,000 rows of DATA's test split",
    ),
]
LabelEpochsOpt = Annotated[
    int | None, typer.Option(help="epochs of the label check's cross-validation models (default: about 1,500 steps)")
]


def _settings(
    checks: str | None, detector: str, gap: float, epochs: int, seed: int, dataset: Any, label_epochs: int | None
) -> Any:
    from bastion.defenses.data import CHECKS, CheckSettings
    from bastion.models.zoo.recipe import Recipe

    chosen = tuple(c.strip() for c in checks.split(",") if c.strip()) if checks else CHECKS
    if epochs < 1 or (label_epochs is not None and label_epochs < 1):
        raise ConfigError(f"--epochs and --label-epochs must be >= 1, got {epochs} and {label_epochs}")
    return CheckSettings(
        checks=chosen,
        detector=detector,
        gap=gap,
        seed=seed,
        label_epochs=label_epochs,
        recipe=Recipe.for_data(dataset.spec, dataset.name, epochs=epochs),
    )


def _run_check(dataset: Any, model: Path | None, settings: Any, trusted: tuple[Any, Any] | None = None) -> Any:
    from bastion.defenses.data import check_dataset

    classifier = None
    if model is not None:
        loaded = read_model(model, dataset)
        classifier = loaded.classifier
        if not hasattr(classifier, "module"):
            raise ConfigError(
                f"{model.name} is a {loaded.format} model without a torch module: the poison detector reads a torch "
                "model's features; drop --model and Bastion trains one on DATA"
            )
    from bastion.cli._console import progress_bar

    with progress_bar() as bar:  # a bar per model trained (cross-validation folds, the feature model)
        return check_dataset(dataset, settings=settings, model=classifier, trusted=trusted, progress=bar)


def _checked(
    data: str, model: Path | None, how: tuple[Any, ...], read: tuple[Any, ...], trusted: str | None = None
) -> tuple[Any, Any, Any]:
    """Read DATA (``read``: the data-file options in their CLI order), build the settings (``how``) and check it;
    ``trusted`` is read with the same options."""
    from bastion.defenses.data.cleaning import training_part

    names = ("label_column", "image_size", "channels", "scale", "bounds", "input_shape")
    dataset = read_data(data, **dict(zip(names, read, strict=True)))
    checks, detector, gap, epochs, seed, label_epochs = how
    settings = _settings(checks, detector, gap, epochs, seed, dataset, label_epochs)
    rows = None
    if trusted is not None:
        given = read_data(trusted, **dict(zip(names, read, strict=True)))
        if given.spec.input_shape != dataset.spec.input_shape:
            raise ConfigError(
                f"--trusted rows have shape {given.spec.input_shape}, DATA's {dataset.spec.input_shape}: pass trusted "
                "rows of the same kind as DATA"
            )
        tx, ty, _ = training_part(given)
        rows = (tx, ty)
    result = _run_check(dataset, model, settings, rows)
    _print(result)
    return dataset, settings, result


def _print(check: Any) -> None:
    colour = "red" if check.verdict != "clean" else "green"
    console.print(f"[{colour}]{check.verdict}[/] in {check.dataset['name']} ({check.dataset['rows']} rows)")
    for f in check.findings:
        mark = {"error": "red", "warning": "yellow", "info": "dim"}[f.severity]
        console.print(f"  [{mark}]{f.severity:7}[/] {f.check}: {f.message}", highlight=False, markup=True)


def check(
    data: Annotated[str, typer.Argument(help="built-in dataset name, or .npz / CSV / image folder")],
    model: ModelOpt = None,
    report: Annotated[Path | None, typer.Option("--report", help="write an HTML report here")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write every finding with its indices here")] = None,
    checks: ChecksOpt = None,
    detector: DetectorOpt = "projection-gap",
    gap: GapOpt = 3.0,
    epochs: EpochsOpt = 10,
    seed: SeedOpt = 0,
    label_epochs: LabelEpochsOpt = None,
    trusted: TrustedOpt = None,
    fail_on_findings: Annotated[
        bool, typer.Option(help="exit 1 when any error or warning is found (a CI gate)")
    ] = False,
    label_column: LabelOpt = "label",
    image_size: SizeOpt = None,
    channels: ChannelsOpt = None,
    scale: ScaleOpt = None,
    bounds: BoundsOpt = None,
    input_shape: ShapeOpt = None,
) -> None:
    """Validate a training set (schema, range, duplicates, leakage, balance), find wrong labels by confident
    learning and poisoned samples over a model's features and by confusion training; print the findings,
    optionally as HTML and JSON."""
    dataset, _, result = _checked(
        data,
        model,
        (checks, detector, gap, epochs, seed, label_epochs),
        (label_column, image_size, channels, scale, bounds, input_shape),
        trusted,
    )
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result.to_dict(), indent=1))
        console.print(f"findings: {json_out}")
    if report is not None:
        from bastion.defenses.data.cleaning import training_part
        from bastion.reports.data_check import write_data_report

        x, y, _ = training_part(dataset)
        console.print(f"report: {write_data_report(result, x, y, dataset.spec, report)}")
    if fail_on_findings and result.verdict != "clean":
        raise typer.Exit(1)


def clean(
    data: Annotated[str, typer.Argument(help="built-in dataset name, or .npz / CSV / image folder")],
    out: Annotated[Path, typer.Option("--out", help="the cleaned data, an .npz file; its record goes beside it")],
    remove: Annotated[
        str | None,
        typer.Option(
            help="comma-separated checks whose rows are removed (default: schema, range, duplicates, "
            "conflicting-duplicates, label-errors, poison, confusion)"
        ),
    ] = None,
    quarantine: Annotated[
        Path | None, typer.Option(help="keep the removed rows in this .npz (with their original indices) for review")
    ] = None,
    retrain: Annotated[
        Path | None, typer.Option(help="train the recipe on the cleaned data and save the model here (.safetensors)")
    ] = None,
    model: ModelOpt = None,
    checks: ChecksOpt = None,
    detector: DetectorOpt = "projection-gap",
    gap: GapOpt = 3.0,
    epochs: EpochsOpt = 10,
    seed: SeedOpt = 0,
    label_epochs: LabelEpochsOpt = None,
    trusted: TrustedOpt = None,
    label_column: LabelOpt = "label",
    image_size: SizeOpt = None,
    channels: ChannelsOpt = None,
    scale: ScaleOpt = None,
    bounds: BoundsOpt = None,
    input_shape: ShapeOpt = None,
) -> None:
    """Check DATA, remove (or quarantine) the rows of the removable findings, write the cleaned .npz and its
    cleaning record (both datasets' digests, every removed row with its checks and scores), retrain if asked."""
    import numpy as np

    from bastion.data.files import load_data_path
    from bastion.defenses.data import DEFAULT_REMOVE, clean_dataset

    if out.suffix.lower() != ".npz":
        raise ConfigError(f"--out must name an .npz file, got {out.name}")
    if quarantine is not None and quarantine.suffix.lower() != ".npz":
        raise ConfigError(f"--quarantine must name an .npz file, got {quarantine.name}")
    if retrain is not None and retrain.suffix.lower() != ".safetensors":
        raise ConfigError(f"--retrain must name a .safetensors file, got {retrain.name}")
    removing = tuple(c.strip() for c in remove.split(",") if c.strip()) if remove else DEFAULT_REMOVE
    dataset, settings, result = _checked(
        data,
        model,
        (checks, detector, gap, epochs, seed, label_epochs),
        (label_column, image_size, channels, scale, bounds, input_shape),
        trusted,
    )
    cleaned = clean_dataset(dataset, result, remove=removing, action="quarantine" if quarantine else "remove")
    out.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"x_train": cleaned.x.numpy(), "y_train": cleaned.y.numpy()}
    if result.dataset["split"] == "train":
        arrays |= {"x_test": dataset.x_test.numpy(), "y_test": dataset.y_test.numpy()}
    else:  # a one-split file stays one split
        arrays = {"x": cleaned.x.numpy(), "y": cleaned.y.numpy()}
    np.savez(out, **arrays)  # type: ignore[arg-type]
    written = load_data_path(out)
    record = cleaned.record.to_dict()
    record["result"] |= {"path": str(out), "sha256": written.provenance.sha256}
    if quarantine is not None:
        quarantine.parent.mkdir(parents=True, exist_ok=True)
        np.savez(
            quarantine, x=cleaned.removed_x.numpy(), y=cleaned.removed_y.numpy(), index=cleaned.removed_index.numpy()
        )
        record["quarantine"] = str(quarantine)
    if retrain is not None:
        from bastion.models.zoo import save_model
        from bastion.models.zoo.recipe import train_recipe

        recipe = settings.recipe
        with console.status(f"retraining {recipe.architecture} on the cleaned data"):
            trained = train_recipe(
                recipe,
                written,
                written.x_train if written.x_train.shape[0] else written.x_test,
                written.y_train if written.y_train.shape[0] else written.y_test,
                seed=seed,
            )
        card = trained.card
        card.training["cleaning_record"] = str(out.with_suffix(".cleaning.json"))
        save_model(trained.module, card, retrain)
        record["retrained"] = {"model": str(retrain), "recipe": recipe.to_dict(), "clean_accuracy": card.clean_accuracy}
    record_path = out.with_suffix(".cleaning.json")
    record_path.write_text(json.dumps(record, indent=1))
    console.print(
        f"removed {record['removed']} of {record['source']['rows']} rows "
        f"({'quarantined in ' + str(quarantine) if quarantine else 'dropped'}); cleaned data: {out} "
        f"(sha256 {record['result']['sha256'][:12]}…, was {record['source']['sha256'][:12]}…); record: {record_path}"
    )
    if retrain is not None:
        console.print(f"retrained model: {retrain} (clean test accuracy {record['retrained']['clean_accuracy']:.2%})")


data_app.command("check")(check)
data_app.command("clean")(clean)
