"""`bastion demo`: train the reference model on the embedded digits data, assess it, write the report."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from bastion.assess import load_policy
from bastion.cli._console import console, progress_bar
from bastion.cli.assess import assess_model
from bastion.data import load_dataset
from bastion.models.zoo import load_model, save_model, train_model


def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for the model and the report")] = Path(
        "bastion-demo"
    ),
    epochs: Annotated[int, typer.Option(min=1, help="training epochs")] = 20,
    seed: Annotated[int, typer.Option(help="seed")] = 0,
) -> None:
    """Walk the main path on embedded data: train → save with card → load (verified) → assess → report."""
    start = time.perf_counter()
    dataset = load_dataset("digits")
    console.print(f"[bold]1/3[/] training the reference CNN on {dataset!r}")
    with progress_bar() as bar:
        trained = train_model(dataset, epochs=epochs, seed=seed, progress=bar)
    weights = out / "model.safetensors"
    card = save_model(trained.module, trained.card, weights)
    console.print(
        f"    clean test accuracy {card.clean_accuracy:.2%}; saved {weights} (sha256 {card.weights_sha256[:16]}…)"
    )
    console.print("[bold]2/3[/] loading it back (sha256 verified against the card)")
    loaded = load_model(weights)
    console.print("[bold]3/3[/] red-teaming it with the default policy")
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
    console.print(
        f"[green]demo finished in {time.perf_counter() - start:.0f}s[/]; open "
        f"[bold]{(out / 'report' / 'index.html').resolve()}[/] in a browser"
    )
