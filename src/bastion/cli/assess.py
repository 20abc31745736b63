"""`bastion assess`: red-team a model with a policy's attacks and write the HTML + JSON report."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from bastion.cli._console import console, progress_bar
from bastion.cli._inputs import (
    ArchOpt,
    BlackBoxOpt,
    BoundsOpt,
    ChannelsOpt,
    LabelOpt,
    ScaleOpt,
    ShapeOpt,
    SizeOpt,
    TrustOpt,
    card_dataset,
    read_data,
    read_model,
)
from bastion.errors import ConfigError

if TYPE_CHECKING:  # the assessment stack loads when a command runs, so `bastion --version` stays instant
    from bastion.assess.executors import Executor
    from bastion.assess.families import TrainingData
    from bastion.assess.policy import Policy
    from bastion.data.base import Dataset
    from bastion.models import Classifier
    from bastion.reports import Report


def assess_model(
    classifier: Classifier,
    model_info: dict[str, Any],
    dataset: Dataset,
    policy: Policy,
    out: Path,
    *,
    extra_timings: dict[str, float] | None = None,
    training: TrainingData | None = None,
    executor: Executor | None = None,
) -> Report:
    """Run the assessment with a progress bar, write the report and print the summary table."""
    from bastion.assess import run_assessment
    from bastion.reports import build_report, write_report

    if dataset.spec.input_shape != classifier.spec.input_shape:
        raise ConfigError(
            f"model {model_info.get('name')} takes inputs of shape {classifier.spec.input_shape} but dataset "
            f"{dataset.name} has {dataset.spec.input_shape}; assess it on the data it was trained for "
            f"({model_info.get('dataset', {}).get('name', 'see its card')})"
        )
    with progress_bar() as bar:
        assessment = run_assessment(
            classifier, dataset.x_test, dataset.y_test, policy, progress=bar, training=training, executor=executor
        )
    report = build_report(
        assessment,
        model=model_info,
        data=dataset.provenance.to_dict(),
        class_names=dataset.spec.class_names,
        timings=extra_timings,
    )
    html_path, json_path = write_report(report, out)
    print_summary(report)
    dist = assessment.extra.get("distributed")
    if dist:
        console.print(
            f"ran as {dist['jobs']} jobs on {dist['executor']} in {dist['seconds']:.1f} s (same figures as one process)",
            highlight=False,
        )
    console.print(f"report: [bold]{html_path}[/]  figures: {json_path}")
    return report


def print_summary(report: Report) -> None:
    ci = report.clean_accuracy_ci
    table = Table(
        title=f"{report.title} — clean accuracy {report.clean_accuracy:.1%} [{ci[0]:.1%}, {ci[1]:.1%}] "
        f"on {report.n_samples} inputs"
    )
    for col in ("attack", "norm", "eps", "robust acc [CI]", "success", "median norm", "seconds"):
        table.add_column(col, justify="left" if col in ("attack", "norm") else "right")
    partial = False
    for a in report.attacks:
        for b in a["budgets"]:
            mark = "" if b.get("complete", True) else " (partial)"
            partial = partial or bool(mark)
            lo, hi = b.get("robust_accuracy_ci", (0.0, 1.0))
            table.add_row(
                a["id"],
                a["norm"],
                f"{b['eps']:g}",
                f"{b['robust_accuracy']:.1%} [{lo:.1%}, {hi:.1%}]{mark}",
                f"{b['success_rate']:.1%}",
                f"{b['median_norm']:.3f}",
                f"{b['seconds']:.2f}",
            )
    if report.attacks:
        console.print(table)
    for section in report.sections:
        for head, body in section.tables:
            t = Table(title=section.title)
            for col in head:
                t.add_column(col)
            for row in body:
                t.add_row(*row)
            console.print(t)
    if partial:
        console.print("[yellow](partial): the attack stopped early and its figures overstate robustness. Why:[/]")
        for a in report.attacks:
            for err in a.get("errors", []):
                console.print(f"  {a['id']} {err}", highlight=False, markup=False)
    for f in report.sanity:
        colour = "red" if f["severity"] == "error" else "yellow"
        accepted = f["check"] in report.policy.get("accept_sanity", [])
        tag = f"{f['severity']}{' (accepted by the policy)' if accepted else ''}"
        console.print(f"[{colour}]sanity {tag}[/] {escape(f['check'])}: {escape(f['message'])}", highlight=False)
    for c in report.checks:
        mark = {"pass": "[green]pass[/]", "fail": "[red]FAIL[/]"}.get(c["status"], "[yellow]INCONCLUSIVE[/]")
        est = c.get("estimate") or {}
        interval = f", CI [{est['low']:.4f}, {est['high']:.4f}]" if "k" in est else ""
        why = f" — {c['reason']}" if c.get("reason") else ""
        console.print(
            f"{mark}  {escape(c['rule'])}  (measured {c['value']:.4f}{interval}){escape(why)}", highlight=False
        )


def assess(
    model: Annotated[
        Path | None,
        typer.Argument(help="model file: .safetensors (+ card or --arch), .onnx, .pt2, TorchScript or .skops"),
    ] = None,
    data: Annotated[
        str | None,
        typer.Option("--data", "-d", help="built-in dataset name, or an .npz / CSV file / image folder"),
    ] = None,
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
    max_throttle_wait: Annotated[
        float,
        typer.Option(
            min=0.0, help="--url: seconds in all to wait out rate limits (429) before calling the run cut short"
        ),
    ] = 30.0,
    arch: ArchOpt = None,
    trust: TrustOpt = None,
    black_box: BlackBoxOpt = False,
    input_shape: ShapeOpt = None,
    bounds: BoundsOpt = None,
    label_column: LabelOpt = "label",
    image_size: SizeOpt = None,
    channels: ChannelsOpt = None,
    scale: ScaleOpt = None,
    junit: Annotated[Path | None, typer.Option(help="also write JUnit XML here (one test case per threshold)")] = None,
    baseline: Annotated[
        Path | None, typer.Option(help="an earlier results.json: fail on any rate that got worse by > --tolerance")
    ] = None,
    tolerance: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="allowed drop of a rate against --baseline")
    ] = 0.02,
    members: Annotated[
        str | None,
        typer.Option(
            help="membership inference: 'train' says the --data's train split is what the model was trained on "
            "(default: known from a Bastion model's card when it names exactly this training data)"
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            help="run the policy as independent jobs on this many local processes (same figures as one process)"
        ),
    ] = None,
    ray: Annotated[
        str | None,
        typer.Option(
            "--ray",
            help="run the jobs on the Ray cluster at this address (host:port, 'auto', or 'local' to start one "
            "here); needs pip install 'bastion[ray]'",
        ),
    ] = None,
) -> None:
    """Red-team MODEL (or the endpoint at --url) with the policy's probes; exit 1 when the gate fails, 3 when it is
    inconclusive."""
    from bastion.assess import load_policy
    from bastion.assess.executors import executor_for
    from bastion.models import HttpClassifier

    if (model is None) == (url is None):
        raise ConfigError("give either a MODEL file or --url (an endpoint), not both and not neither")
    if url is not None and (workers is not None or ray is not None):
        raise ConfigError(
            "--url cannot be split over --workers/--ray: the workers would share the endpoint's rate limit and "
            "its degraded answers; assess an endpoint from one process"
        )
    executor = executor_for(workers, ray)  # checks --workers and --ray before any data or model is read
    if model is not None and not model.is_file():
        raise ConfigError(f"model file {model} does not exist")
    if baseline is not None and not baseline.is_file():  # before the run, not after minutes of attacks
        raise ConfigError(f"baseline {baseline} does not exist; pass the results.json of an earlier assess run")
    data_name = data
    if data_name is None and model is not None:
        data_name = card_dataset(model)
    if data_name is None:
        what = "--url" if url else f"{model.name if model else 'the model'} (it names no dataset)"
        raise ConfigError(f"{what} needs --data: a built-in name, or the path of an .npz, CSV or image folder")
    dataset = read_data(
        data_name,
        data_path=data_path,
        label_column=label_column,
        image_size=image_size,
        channels=channels,
        scale=scale,
        bounds=bounds,
        input_shape=input_shape,
    )
    loaded = None
    if model is not None:
        loaded = read_model(
            model, dataset, arch=arch, trust=trust, black_box=black_box, input_shape=input_shape, bounds=bounds
        )
    black = url is not None or (loaded is not None and loaded.access == "black-box")
    pol = load_policy(policy, built_in="blackbox" if black else "default")
    overrides: dict[str, Any] = {}
    if samples is not None:
        overrides["samples"] = samples
    elif policy is None and pol.samples > dataset.x_test.shape[0]:
        overrides["samples"] = int(dataset.x_test.shape[0])  # a built-in policy runs on small data sets too
    if seed is not None:
        overrides["seed"] = seed
    if overrides:
        pol = pol.model_copy(update=overrides)
    if black:
        white = pol.white_box_attacks()
        if white:
            why = (
                "an endpoint does not give"
                if url
                else f"{model.name if model else 'it'} is black-box ({loaded.notes[0] if loaded else ''})"
            )
            raise ConfigError(
                f"the policy runs white-box attacks ({', '.join(white)}) that need gradients, which {why}; "
                "use black-box attacks (square, hopskipjump) or leave --policy out"
            )
    if url is not None:
        with HttpClassifier(
            url, dataset.spec, api_key=api_key, timeout=timeout, max_total_wait=max_throttle_wait
        ) as remote:
            training = training_data(members, dataset, None)
            report = assess_model(
                remote, {"name": f"endpoint {url}", "endpoint": url}, dataset, pol, out, training=training
            )
    else:
        assert loaded is not None
        for note in loaded.notes:
            console.print(f"model: {loaded.name} ({loaded.format}) — {note}", highlight=False)
        training = training_data(members, dataset, loaded.card)
        report = assess_model(loaded.classifier, loaded.info(), dataset, pol, out, training=training, executor=executor)
    finish(report, url=url, junit=junit, baseline=baseline, tolerance=tolerance)


def training_data(members: str | None, dataset: Dataset, card: Any) -> TrainingData | None:
    """The model's training data for membership inference: the --data's train split when the user says so
    (``--members train``) or when the model's card names exactly that training data; None when unknown."""
    from bastion.assess.families import TrainingData
    from bastion.models.zoo.card import training_digest

    if members is not None and members != "train":
        raise ConfigError(f"--members takes 'train' (the --data's train split), got {members!r}")
    n_train = int(dataset.x_train.shape[0])
    if members == "train":
        if n_train == 0:
            raise ConfigError(
                f"--members train: {dataset.name} has no train split; give an .npz with x_train/y_train beside "
                "x_test/y_test"
            )
        return TrainingData(dataset.x_train, dataset.y_train, card, "stated with --members train")
    record = getattr(card, "dataset", None) or {}
    digest = record.get("train_sha256")  # cards from before it recorded only the dataset, not which points trained
    known = n_train and digest and record.get("n_train") == n_train
    if known and digest == training_digest(dataset.x_train, dataset.y_train):
        return TrainingData(dataset.x_train, dataset.y_train, card, f"the model's card: {dataset.name} train split")
    return None


def finish(report: Report, *, url: str | None, junit: Path | None, baseline: Path | None, tolerance: float) -> None:
    """Compare with a baseline, write JUnit, print the gate's verdict and exit: 0 pass or no gate, 1 fail,
    3 inconclusive."""
    from bastion.assess.baseline import read_baseline, regressions
    from bastion.reports.render.junit import write_junit

    found = []
    if baseline is not None:
        found = [r.describe() for r in regressions(report.rows, read_baseline(baseline), tolerance)]
        for r in found:
            console.print(f"[red]regression[/] beyond {tolerance:g}: {escape(r)}", highlight=False)
        if not found:
            console.print(f"no regression beyond {tolerance:g} against {baseline}")
    if junit is not None:
        write_junit(report, junit, found)
    if report.gate == "fail" or found:
        reasons = list(report.gate_reasons if report.gate == "fail" else []) + [f"regression: {r}" for r in found]
        console.print(f"[red]policy gate failed[/]: {escape('; '.join(reasons))}", highlight=False)
        raise typer.Exit(1)
    if report.gate == "inconclusive":
        console.print(f"[yellow]policy gate inconclusive[/]: {escape('; '.join(report.gate_reasons))}", highlight=False)
        if url is not None:
            console.print(
                "The endpoint cut the run short (rate limits, refusals or degraded answers), so these figures are "
                "the gateway's defences at work, not the model's robustness. For a clean run against a Bastion "
                "gateway, assess a copy of it with its monitors off and rate limits that allow the policy's queries "
                "(rate.inputs_per_minute, rate.requests_per_second), or wait longer for rate limits with "
                "--max-throttle-wait. Assessment keys that a production gateway serves unthrottled are planned "
                "(the gateway issue)."
            )
        raise typer.Exit(3)
    if report.gate == "no gate":
        console.print("no gate set: the policy has no thresholds, so nothing was passed or failed")
    else:
        console.print("[green]policy gate passed[/]")
