"""`bastion demo`: train the reference model on the embedded digits data, assess it, write the report."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from bastion.data import Dataset

from bastion.cli._console import console, progress_bar


def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for the model and the report")] = Path(
        "bastion-demo"
    ),
    epochs: Annotated[int, typer.Option(min=1, help="training epochs")] = 20,
    seed: Annotated[int, typer.Option(help="seed")] = 0,
) -> None:
    """Walk the main path on embedded data: train → save with card → load (verified) → assess → report → serve it
    behind the gateway and attack it through HTTP, to see the attack flagged and the attacker degraded."""
    from bastion.assess import load_policy
    from bastion.cli.assess import assess_model
    from bastion.data import load_dataset
    from bastion.models.zoo import load_model, save_model, train_model

    start = time.perf_counter()
    dataset = load_dataset("digits")
    console.print(f"[bold]1/4[/] training the reference CNN on {dataset!r}")
    with progress_bar() as bar:
        trained = train_model(dataset, epochs=epochs, seed=seed, progress=bar)
    weights = out / "model.safetensors"
    card = save_model(trained.module, trained.card, weights)
    console.print(
        f"    clean test accuracy {card.clean_accuracy:.2%}; saved {weights} (sha256 {card.weights_sha256[:16]}…)"
    )
    console.print("[bold]2/4[/] loading it back (sha256 verified against the card)")
    loaded = load_model(weights)
    console.print("[bold]3/4[/] red-teaming it with the default policy")
    policy = load_policy(None).model_copy(update={"seed": seed})
    train_seconds = card.training.get("seconds", 0.0)
    assess_model(
        loaded.classifier,
        loaded.card.to_dict(),
        dataset,
        policy,
        out / "report",
        extra_timings={"training_seconds": train_seconds},
    )
    console.print("[bold]4/4[/] serving it behind the gateway and attacking it through HTTP (Square, 5 images)")
    _gateway_demo(out, weights, dataset, seed)
    console.print(
        f"[green]demo finished in {time.perf_counter() - start:.0f}s[/]; open "
        f"[bold]{(out / 'report' / 'index.html').resolve()}[/] in a browser"
    )


def _gateway_demo(out: Path, weights: Path, dataset: Dataset, seed: int) -> None:
    """Serve the model on a loopback port, attack it through HTTP with Square, report what the gateway did."""
    import httpx
    import torch
    import yaml

    from bastion.attacks import Square
    from bastion.gateway import Gateway, load_config
    from bastion.gateway.server import serve_in_background
    from bastion.models.http import HttpClassifier
    from bastion.types import Norm, ThreatModel

    folder = out / "gateway"
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("gateway.db*"):
        old.unlink()
    config = folder / "gateway.yaml"
    config.write_text(
        yaml.safe_dump({"models": {"digits": {"paths": [str(weights.resolve())]}}, "database": "gateway.db"})
    )
    gateway = Gateway.from_config(load_config(config))
    try:
        _, attacker = gateway.keys.create("demo-attacker", ["predict:scores"])
        _, admin = gateway.keys.create("demo-admin", ["admin"])
        with serve_in_background(gateway) as url:
            # no waiting out 429s: the demo shows the throttle stopping the attack, in seconds
            remote = HttpClassifier(
                f"{url}/v1/models/digits/predict", dataset.spec, api_key=attacker, rate_limit_retries=0
            )
            x, y = dataset.x_test[:5], dataset.y_test[:5]
            result = Square(ThreatModel(Norm.LINF, 0.1), max_queries=100).run(
                remote, x, y, generator=torch.Generator().manual_seed(seed)
            )
            time.sleep(1.1)  # the under-attack policy cuts the key to a tenth of its burst allowance
            answer = httpx.post(
                f"{url}/v1/models/digits/predict",
                json={"inputs": x[:1].tolist()},
                headers={"Authorization": f"Bearer {attacker}"},
                timeout=30,
            ).json()
            incidents = httpx.get(
                f"{url}/v1/admin/incidents", headers={"Authorization": f"Bearer {admin}"}, timeout=30
            ).json()["incidents"]
        events = gateway.store.count_events()
    finally:
        gateway.close()
    for inc in incidents:
        first = inc["evidence"][0]["evidence"].get("queries", "?")
        console.print(
            f"    incident {inc['incident_id']}: [bold]{inc['kind']}[/] ({inc['atlas']}) after {first} queries — "
            f"{inc['summary'][:110]}"
        )
    if not incidents:
        console.print("    [yellow]no incident was opened[/]")
    if "error" in answer:
        state = f"is refused: {answer['error']['message']}"
    else:
        state = f"is now [bold]{answer['threat_level']}[/] and gets [bold]{answer['release']}[/]"
    stopped = "" if result.complete else " before the gateway's rate limit stopped it"
    console.print(
        f"    the attacker's key {state}; Square sent {int(result.queries.sum())} queries{stopped} and broke "
        f"{int(result.success.sum())} of 5 inputs; {events} audit events in {folder / 'gateway.db'}"
    )
    console.print(f"    serve it yourself: bastion serve -c {config} (create a key with `bastion keys create`)")
