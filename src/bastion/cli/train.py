"""`bastion train`: train a reference model and save it as safetensors plus its JSON card."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bastion.cli._console import console, progress_bar


def train(
    data: Annotated[str, typer.Option("--data", "-d", help="dataset: digits, fashion-mnist, breast-cancer")] = "digits",
    out: Annotated[Path, typer.Option("--out", "-o", help="where to write the .safetensors file")] = Path(
        "model.safetensors"
    ),
    arch: Annotated[str | None, typer.Option(help="architecture (default: the dataset's reference net)")] = None,
    epochs: Annotated[int, typer.Option(min=1, help="training epochs")] = 10,
    seed: Annotated[int, typer.Option(help="seed for initialisation and shuffling")] = 0,
    batch_size: Annotated[int, typer.Option(min=1)] = 128,
    lr: Annotated[float, typer.Option(help="Adam learning rate")] = 1e-3,
    data_path: Annotated[Path | None, typer.Option(help="folder of the dataset files (fashion-mnist)")] = None,
) -> None:
    """Train a reference model on a dataset, seeded, and save it with its model card."""
    from bastion.data import load_dataset
    from bastion.models.zoo import save_model, train_model

    dataset = load_dataset(data, **({"path": data_path} if data_path is not None else {}))
    with progress_bar() as bar:
        trained = train_model(
            dataset, architecture=arch, epochs=epochs, seed=seed, batch_size=batch_size, lr=lr, progress=bar
        )
    card = save_model(trained.module, trained.card, out)
    console.print(
        f"[green]trained[/] {card.architecture} on {dataset.name}: clean test accuracy "
        f"[bold]{card.clean_accuracy:.2%}[/] in {card.training['seconds']:.1f}s"
    )
    console.print(f"wrote {out} and {out.with_suffix('.json')} (weights sha256 {card.weights_sha256[:16]}…)")
