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
from bastion.models import Classifier, HttpClassifier
from bastion.models.zoo import load_model
from bastion.reports import Report, build_report, write_report


def assess_model(
    classifier: Classifier,
    model_info: dict[str, Any],
    dataset: Dataset,
    policy: Policy,
    out: Path,
    *,
    extra_timings: dict[str, float] | None = None,
) -> Report:
    """Run the assessment with a progress bar, write the report and print the summary table."""
    if dataset.spec.input_shape != classifier.spec.input_shape:
        raise ConfigError(
            f"model {model_info.get('name')} takes inputs of shape {classifier.spec.input_shape} but dataset "
            f"{dataset.name} has {dataset.spec.input_shape}; assess it on the data it was trained for "
            f"({model_info.get('dataset', {}).get('name', 'see its card')})"
        )
    with progress_bar() as bar:
        assessment = run_assessment(classifier, dataset.x_test, dataset.y_test, policy, progress=bar)
    report = build_report(
        assessment,
        model=model_info,
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
    partial = False
    for a in report.attacks:
        for b in a["budgets"]:
            mark = "" if b.get("complete", True) else " (partial)"
            partial = partial or bool(mark)
            table.add_row(
                a["id"],
                a["norm"],
                f"{b['eps']:g}",
                f"{b['robust_accuracy']:.1%}{mark}",
                f"{b['success_rate']:.1%}",
                f"{b['median_norm']:.3f}",
                f"{b['seconds']:.2f}",
            )
    console.print(table)
    if partial:
        console.print("[yellow](partial): the attack stopped early and its figures overstate robustness. Why:[/]")
        for a in report.attacks:
            for err in a.get("errors", []):
                console.print(f"  {a['id']} {err}", highlight=False, markup=False)
    for c in report.checks:
        mark = "[green]pass[/]" if c["passed"] else "[red]FAIL[/]"
        console.print(f"{mark}  {c['rule']}  (measured {c['value']:.4f})")


def assess(
    model: Annotated[
        Path | None, typer.Argument(help="model weights (.safetensors) with its .json card beside it")
    ] = None,
    data: Annotated[str | None, typer.Option("--data", "-d", help="dataset (default: the one in the card)")] = None,
    policy: Annotated[Path | None, typer.Option("--policy", "-p", help="policy YAML/JSON (default: built-in)")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="report folder")] = Path("report"),
    samples: Annotated[int | None, typer.Option(min=1, help="override the policy's number of test inputs")] = None,
    seed: Annotated[int | None, typer.Option(help="override the policy's seed")] = None,
    data_path: Annotated[Path | None, typer.Option(help="folder of the dataset files (fashion-mnist)")] = None,
    url: Annotated[
        str | None, typer.Option(help="attack a live endpoint instead of a file (black-box attacks only)")
    ] = None,
    api_key: Annotated[str | None, typer.Option(envvar="BASTION_API_KEY", help="bearer key for --url")] = None,
    timeout: Annotated[float, typer.Option(min=0.1, help="seconds to wait for each answer from --url")] = 30.0,
) -> None:
    """Red-team MODEL (or the endpoint at --url) with the policy's attacks; exit 1 when a threshold fails."""
    if (model is None) == (url is None):
        raise ConfigError("give either a MODEL file or --url (an endpoint), not both and not neither")
    pol = load_policy(policy, built_in="blackbox" if url else "default")
    overrides: dict[str, Any] = {}
    if samples is not None:
        overrides["samples"] = samples
    if seed is not None:
        overrides["seed"] = seed
    if overrides:
        pol = pol.model_copy(update=overrides)
    kwargs = {"path": data_path} if data_path is not None else {}
    if url is not None:
        if data is None:
            raise ConfigError("--url needs --data: the dataset the endpoint's model expects")
        white = pol.white_box_attacks()
        if white:
            raise ConfigError(
                f"the policy runs white-box attacks ({', '.join(white)}) that need gradients, which an endpoint "
                "does not give; use black-box attacks (square, hopskipjump) or leave --policy out"
            )
        dataset = load_dataset(data, **kwargs)
        with HttpClassifier(url, dataset.spec, api_key=api_key, timeout=timeout) as remote:
            report = assess_model(remote, {"name": f"endpoint {url}", "endpoint": url}, dataset, pol, out)
    else:
        assert model is not None
        loaded = load_model(model)
        dataset = load_dataset(data or str(loaded.card.dataset.get("name")), **kwargs)
        report = assess_model(loaded.classifier, loaded.card.to_dict(), dataset, pol, out)
    if not report.passed:
        failed = [c["rule"] for c in report.checks if not c["passed"]]
        console.print(f"[red]policy gate failed[/]: {'; '.join(failed)}")
        raise typer.Exit(1)
