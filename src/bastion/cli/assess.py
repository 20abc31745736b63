"""`bastion assess`: red-team a model with a policy's attacks and write the HTML + JSON report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from bastion.assess import load_policy, run_assessment
from bastion.assess.policy import Policy
from bastion.cli._console import console, progress_bar
from bastion.data import load_dataset
from bastion.data.base import Dataset
from bastion.errors import ConfigError
from bastion.models.zoo import LoadedModel, load_model
from bastion.reports import Report, build_report, write_report


def assess_model(
    loaded: LoadedModel, dataset: Dataset, policy: Policy, out: Path, *, extra_timings: dict[str, float] | None = None
) -> Report:
    """Run the assessment with a progress bar, write the report and print the summary table."""
    if dataset.spec.input_shape != loaded.card.spec.input_shape:
        raise ConfigError(
            f"model {loaded.card.name} takes inputs of shape {loaded.card.spec.input_shape} but dataset "
            f"{dataset.name} has {dataset.spec.input_shape}; assess it on the data it was trained for "
            f"({loaded.card.dataset.get('name')})"
        )
    with progress_bar() as bar:
        assessment = run_assessment(loaded.classifier, dataset.x_test, dataset.y_test, policy, progress=bar)
    report = build_report(
        assessment,
        model=loaded.card.to_dict(),
        data=dataset.provenance.to_dict(),
        class_names=dataset.spec.class_names,
        timings=extra_timings,
    )
    html_path, json_path = write_report(report, out)
    print_summary(report)
    console.print(f"report: [bold]{html_path}[/]  figures: {json_path}")
    return report


def print_summary(report: Report) -> None:
    table = Table(title=f"{report.title} — clean accuracy {report.clean_accuracy:.1%} on {report.n_samples} inputs")
    for col in ("attack", "norm", "eps", "robust acc", "success", "median norm", "seconds"):
        table.add_column(col, justify="left" if col in ("attack", "norm") else "right")
    for a in report.attacks:
        for b in a["budgets"]:
            table.add_row(
                a["id"],
                a["norm"],
                f"{b['eps']:g}",
                f"{b['robust_accuracy']:.1%}",
                f"{b['success_rate']:.1%}",
                f"{b['median_norm']:.3f}",
                f"{b['seconds']:.2f}",
            )
    console.print(table)
    for c in report.checks:
        mark = "[green]pass[/]" if c["passed"] else "[red]FAIL[/]"
        console.print(f"{mark}  {c['rule']}  (measured {c['value']:.4f})")


def assess(
    model: Annotated[Path, typer.Argument(help="model weights (.safetensors) with its .json card beside it")],
    data: Annotated[str | None, typer.Option("--data", "-d", help="dataset (default: the one in the card)")] = None,
    policy: Annotated[Path | None, typer.Option("--policy", "-p", help="policy YAML/JSON (default: built-in)")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="report folder")] = Path("report"),
    samples: Annotated[int | None, typer.Option(min=1, help="override the policy's number of test inputs")] = None,
    seed: Annotated[int | None, typer.Option(help="override the policy's seed")] = None,
    data_path: Annotated[Path | None, typer.Option(help="folder of the dataset files (fashion-mnist)")] = None,
) -> None:
    """Red-team MODEL with the policy's attacks; exit 1 when a policy threshold fails."""
    pol = load_policy(policy)
    overrides: dict[str, Any] = {}
    if samples is not None:
        overrides["samples"] = samples
    if seed is not None:
        overrides["seed"] = seed
    if overrides:
        pol = pol.model_copy(update=overrides)
    loaded = load_model(model)
    name = data or str(loaded.card.dataset.get("name"))
    dataset = load_dataset(name, **({"path": data_path} if data_path is not None else {}))
    report = assess_model(loaded, dataset, pol, out)
    if not report.passed:
        failed = [c["rule"] for c in report.checks if not c["passed"]]
        console.print(f"[red]policy gate failed[/]: {'; '.join(failed)}")
        raise typer.Exit(1)
