"""`bastion redteam run`: one scheduled red-team run against a live service (run it from a timer)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bastion.cli._console import console

redteam_app = typer.Typer(help="Red-team a live service on a schedule.", no_args_is_help=True)


@redteam_app.command("run")
def run(
    url: Annotated[str, typer.Option(help="the service's base URL, e.g. http://127.0.0.1:8080")],
    model: Annotated[str, typer.Option(help="the served model's name")],
    data: Annotated[str, typer.Option("--data", "-d", help="built-in dataset name, or an .npz / CSV / image folder")],
    config: Annotated[Path, typer.Option("--config", "-c", help="the gateway's YAML (where incidents go)")] = Path(
        "gateway.yaml"
    ),
    runs: Annotated[Path, typer.Option(help="folder of the runs (one sub-folder each)")] = Path("redteam-runs"),
    policy: Annotated[
        Path | None, typer.Option("--policy", "-p", help="policy YAML (default: built-in blackbox)")
    ] = None,
    samples: Annotated[int | None, typer.Option(min=1, help="override the policy's number of test inputs")] = None,
    tolerance: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="allowed drop of a rate against the last run")
    ] = 0.02,
    api_key: Annotated[
        str | None, typer.Option(envvar="BASTION_API_KEY", help="a red-team key (assessment scope)")
    ] = None,
    timeout: Annotated[float, typer.Option(min=0.1, help="seconds to wait for each answer")] = 30.0,
) -> None:
    """Assess the live model through its API with a red-team key, keep the run, compare it with the previous one,
    and open an incident in the gateway when it regressed (exit 1); exit 3 when the run itself was inconclusive.
    Schedule it with a system timer (docs/response.md)."""
    from bastion.assess import load_policy, run_assessment
    from bastion.assess.baseline import read_baseline, regressions
    from bastion.cli._inputs import read_data
    from bastion.errors import ConfigError
    from bastion.gateway.admin import admin_session
    from bastion.gateway.redteam import new_run_folder, previous_run, record_run
    from bastion.models import HttpClassifier
    from bastion.reports import build_report, write_report

    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"--url must be http(s)://host:port of the service, got {url!r}")
    if not api_key:
        raise ConfigError(
            "a red-team key is needed: --api-key or BASTION_API_KEY (create one with the assessment scope)"
        )
    if not config.is_file():
        raise ConfigError(f"gateway configuration {config} does not exist (incidents are opened in its database)")
    dataset = read_data(data)
    pol = load_policy(policy, built_in="blackbox")
    n = samples if samples is not None else min(pol.samples, int(dataset.x_test.shape[0]))
    pol = pol.model_copy(update={"samples": n})
    white = pol.white_box_attacks()
    if white:
        raise ConfigError(f"the policy runs white-box attacks ({', '.join(white)}); a live service gives no gradients")
    endpoint = f"{url.rstrip('/')}/v1/models/{model}/predict"
    folder = new_run_folder(runs)
    with HttpClassifier(endpoint, dataset.spec, api_key=api_key, timeout=timeout) as remote:
        assessment = run_assessment(remote, dataset.x_test, dataset.y_test, pol)
    report = build_report(
        assessment,
        model={"name": f"endpoint {endpoint}", "endpoint": endpoint},
        data=dataset.provenance.to_dict(),
        class_names=dataset.spec.class_names,
    )
    write_report(report, folder)
    previous = previous_run(runs, folder)
    found = []
    if previous is not None:
        found = [r.describe() for r in regressions(report.rows, read_baseline(previous / "results.json"), tolerance)]
    with admin_session(config) as h:
        result = record_run(h, folder, report.gate, previous, found, url=url, model=model)
    console.print(f"red-team run {folder}: verdict {report.gate}", highlight=False)
    if result.regressions:
        for r in result.regressions:
            console.print(f"[red]regression[/]: {r}", highlight=False)
        console.print(f"incident {result.incident_id} opened in the gateway", highlight=False)
        raise typer.Exit(1)
    console.print(
        f"no regression against {previous.name}" if previous is not None else "first run: nothing to compare with"
    )
    if report.gate == "inconclusive":
        raise typer.Exit(3)
