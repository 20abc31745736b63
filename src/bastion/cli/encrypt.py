"""`bastion encrypt-model MODEL --data DATA --out converted.safetensors`: check that a model can be served encrypted,
convert it (a polynomial in place of ReLU where needed), and report the plaintext accuracy of the converted version
and the CKKS parameters, before anything is encrypted."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from bastion.cli._console import console
from bastion.cli._inputs import ShapeOpt
from bastion.errors import ConfigError


def encrypt_model(
    model: Annotated[Path, typer.Argument(help="the model file (any format Bastion loads)")],
    data: Annotated[str, typer.Option("--data", "-d", help="its data: built-in name, .npz, CSV or image folder")],
    out: Annotated[Path, typer.Option("--out", "-o", help="the converted model (.safetensors)")],
    input_shape: ShapeOpt = None,
    min_accuracy_ratio: Annotated[
        float, typer.Option(help="refuse a conversion whose plaintext accuracy is below this share of the original's")
    ] = 0.9,
) -> None:
    """Convert a linear model or a one-hidden-layer MLP for encrypted inference and report what it will compute."""
    import torch

    from bastion.cli._inputs import read_data, read_model
    from bastion.defenses.encrypted import EncryptedClient, convert_mlp, linear_weights
    from bastion.defenses.encrypted.mlp import DEPTH
    from bastion.defenses.encrypted.storage import save_converted

    if not 0 < min_accuracy_ratio <= 1:
        raise ConfigError(f"--min-accuracy-ratio must be in (0, 1], got {min_accuracy_ratio}")
    if out.suffix != ".safetensors":  # before any work: the model and data may take a while to load
        raise ConfigError(f"--out {out.name}: a converted model is written as .safetensors; name it so")
    dataset = read_data(data, input_shape=input_shape)
    loaded = read_model(model, dataset)
    clf = loaded.classifier
    with torch.no_grad():
        original = clf.predict_logits(dataset.x_test).argmax(1)
    acc = float((original == dataset.y_test).float().mean())
    reasons = []
    weights: Any = None
    try:
        weights, kind, depth = linear_weights(clf, dataset.spec.input_shape), "linear", 1
    except ConfigError as e:
        reasons.append(e.message)
    if weights is None:
        module = getattr(clf, "module", None)
        if module is None:
            raise ConfigError(f"{model.name} cannot be served encrypted: {reasons[0]}; and it is not a torch module")
        try:
            weights, kind, depth = convert_mlp(module, dataset.x_train), "poly-mlp", DEPTH
        except ConfigError as e:
            raise ConfigError(f"{model.name} cannot be served encrypted: {e.message}") from None
    converted = weights.plaintext(dataset.x_test).argmax(1)
    conv_acc = float((converted == dataset.y_test).float().mean())
    agree = float((converted == original).float().mean())
    client = EncryptedClient(weights.n_features, weights.n_outputs, depth=depth)
    batch = client.parameters("batch", min(4096, max(1, int(dataset.x_test.shape[0]))))
    console.print(
        f"{escape(model.name)}: [bold]{kind}[/] ({weights.n_features} -> {weights.n_outputs})", highlight=False
    )
    if kind == "poly-mlp":
        a, b, c = weights.poly
        console.print(f"activation: {a:.4g} h^2 + {b:.4g} h + {c:.4g}", highlight=False)
    console.print(
        f"plaintext accuracy: original {acc:.2%}, converted {conv_acc:.2%} (same label on {agree:.2%} of "
        f"{dataset.x_test.shape[0]} test inputs)",
        highlight=False,
    )
    console.print(f"batch packing (more than {client.single_max} inputs): {escape(batch.explanation)}", highlight=False)
    if depth == 1:
        single = client.parameters("single")
        console.print(
            f"single packing (up to {client.single_max} inputs): {escape(single.explanation)}", highlight=False
        )
    if acc > 0 and conv_acc < min_accuracy_ratio * acc:
        raise ConfigError(
            f"the converted model keeps {conv_acc:.2%} accuracy of the original's {acc:.2%} (below "
            f"{min_accuracy_ratio:g} of it); train with PolyActivation instead of ReLU, or lower --min-accuracy-ratio"
        )
    info = {
        "source": model.name,
        "sha256": loaded.sha256,
        "kind": kind,
        "accuracy": acc,
        "converted_accuracy": conv_acc,
        "agreement": agree,
        "depth": depth,
        "batch_parameters": batch.to_dict(),
    }
    save_converted(weights, out, info)
    console.print(f"wrote {escape(str(out))}", highlight=False)
