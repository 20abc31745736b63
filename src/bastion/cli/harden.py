"""`bastion harden MODEL --data DATA --method ...`: adversarially train a model, save it with its record, and assess
the original and the hardened model with the same policy, side by side."""

from __future__ import annotations

import copy
import dataclasses
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from bastion.cli._console import console, progress_bar
from bastion.cli._inputs import (
    ArchOpt,
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


def _save(
    loaded: Any, module: Any, out: Path, record: dict[str, Any], clean: float, dataset: Any, arch: str | None
) -> str:
    """Bastion safetensors + card for a zoo model (or for the zoo architecture ``arch`` that replaced the input
    model, e.g. ScatterNet + linear for DP); torch.export (.pt2) + a JSON record for anything else."""
    import torch

    if arch is not None:
        from bastion.models.zoo import save_model
        from bastion.models.zoo.card import ModelCard, dataset_record

        if out.suffix != ".safetensors":
            raise ConfigError(f"--out {out}: a {arch} model is saved as .safetensors with a Bastion card; name it so")
        card = ModelCard(
            name=f"{loaded.path.stem}-{record['method']}-{arch}",
            architecture=arch,
            arch_params={},
            spec=dataset.spec,
            dataset=dataset_record(dataset),
            seed=int(record["settings"]["seed"]),
            epochs=len(record["history"]),
            clean_accuracy=clean,
            training={**record, "replaces": {"file": loaded.path.name, "sha256": loaded.sha256}},
            created=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        save_model(module.to(memory_format=torch.contiguous_format), card, out)
        return f"{out} and {out.with_suffix('.json')}"
    if loaded.card is not None:
        from bastion.models.zoo import save_model

        if out.suffix != ".safetensors":
            raise ConfigError(f"--out {out}: a model with a Bastion card is saved as .safetensors; name it so")
        card = dataclasses.replace(
            loaded.card,
            name=f"{loaded.card.name}-{record['method']}",
            clean_accuracy=clean,
            training={**record, "hardened_from": {"file": loaded.path.name, "sha256": loaded.sha256}},
            epochs=len(record["history"]),
            created=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        save_model(module.to(memory_format=torch.contiguous_format), card, out)
        return f"{out} and {out.with_suffix('.json')}"
    if out.suffix != ".pt2":
        raise ConfigError(
            f"--out {out}: {loaded.path.name} has no Bastion card, so the hardened model is written with torch.export;"
            " name the output .pt2"
        )
    example = dataset.x_test[:2].contiguous()
    try:
        program = torch.export.export(
            module.to(memory_format=torch.contiguous_format).eval(),
            (example,),
            dynamic_shapes=({0: torch.export.Dim("n", min=1, max=65536)},),
        )
    except Exception as e:  # torch.export raises many kinds; the user needs the reason in one line
        raise ConfigError(
            f"the hardened model could not be exported with torch.export: {str(e).splitlines()[0]}"
        ) from None
    torch.export.save(program, str(out))
    side = out.with_name(out.stem + ".hardening.json")
    side.write_text(
        json.dumps(
            {"hardened_from": {"file": loaded.path.name, "sha256": loaded.sha256}, "clean_accuracy": clean, **record},
            indent=1,
        )
    )
    return f"{out} and {side}"


def harden(
    model: Annotated[
        Path, typer.Argument(help="model file Bastion loads with gradients (.safetensors, .onnx, .pt2, TorchScript)")
    ],
    data: Annotated[
        str | None, typer.Option("--data", "-d", help="built-in dataset, or .npz / CSV / image folder")
    ] = None,
    method: Annotated[str, typer.Option(help="pgd-at, trades, fast-at, n-fgsm or dp-sgd")] = "pgd-at",
    eps: Annotated[float, typer.Option(help="perturbation budget trained against (Linf)")] = 0.1,
    steps: Annotated[int, typer.Option(min=1, help="inner attack steps (pgd-at, trades)")] = 10,
    beta: Annotated[float, typer.Option(help="TRADES robustness weight")] = 6.0,
    epochs: Annotated[int, typer.Option(min=1)] = 10,
    batch_size: Annotated[int | None, typer.Option(min=1, help="default: 128, or 256 for dp-sgd")] = None,
    lr: Annotated[
        float | None,
        typer.Option(help="learning rate (default: Adam 1e-3; fast-AT's cyclic peak 0.05; 0.2 from fresh weights)"),
    ] = None,
    seed: Annotated[int, typer.Option()] = 0,
    epsilon: Annotated[float, typer.Option(help="dp-sgd: the privacy budget to reach")] = 3.0,
    delta: Annotated[float, typer.Option(help="dp-sgd: delta, below 1/(training inputs)")] = 1e-5,
    max_grad_norm: Annotated[float, typer.Option(help="dp-sgd: per-sample gradient clipping norm")] = 1.0,
    fix_modules: Annotated[
        bool, typer.Option(help="dp-sgd: replace layers DP-SGD cannot train (BatchNorm -> GroupNorm)")
    ] = False,
    dp_mode: Annotated[
        str,
        typer.Option(
            help="dp-sgd: how per-sample gradients are clipped: ghost (fastest; no layer used twice), hooks or "
            "functorch"
        ),
    ] = "ghost",
    features: Annotated[
        str,
        typer.Option(
            help="dp-sgd: none (train MODEL's architecture), or scatternet (replace it by ScatterNet features + a "
            "linear layer, Tramèr & Boneh 2021: more accurate at small epsilon; images only)"
        ),
    ] = "none",
    keep_weights: Annotated[
        bool,
        typer.Option(
            help="dp-sgd: start from MODEL's weights instead of fresh ones; the guarantee then holds only if they "
            "never saw the private data (e.g. trained on public data)"
        ),
    ] = False,
    check_samples: Annotated[
        int, typer.Option(min=1, help="training inputs held out for the per-epoch PGD check")
    ] = 500,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="hardened model (.safetensors with a card, else .pt2)")
    ] = Path("hardened.safetensors"),
    report: Annotated[Path, typer.Option(help="folder of the before/after report")] = Path("hardening-report"),
    policy: Annotated[Path | None, typer.Option("--policy", "-p", help="assessment policy (default: built-in)")] = None,
    samples: Annotated[int | None, typer.Option(min=1, help="test inputs the assessments use")] = None,
    checkpoint_dir: Annotated[
        Path | None, typer.Option(help="checkpoint each epoch here (default: beside --out)")
    ] = None,
    resume: Annotated[bool, typer.Option(help="continue the interrupted run checkpointed in --checkpoint-dir")] = False,
    arch: ArchOpt = None,
    trust: TrustOpt = None,
    input_shape: ShapeOpt = None,
    bounds: BoundsOpt = None,
    label_column: LabelOpt = "label",
    image_size: SizeOpt = None,
    channels: ChannelsOpt = None,
    scale: ScaleOpt = None,
) -> None:
    """Harden MODEL on DATA's training split (adversarial training: PGD-AT, TRADES, fast-AT; or differentially private
    training: DP-SGD), save it, and assess the original and the hardened model with the same policy into one
    before/after report."""
    from bastion.assess import load_policy
    from bastion.cli.assess import assess_model
    from bastion.defenses.training import (
        AdversarialTraining,
        PrivateTraining,
        adversarial_train,
        check_private,
        check_training,
        private_train,
    )
    from bastion.models.torch import TorchClassifier
    from bastion.reports.comparison import write_comparison
    from bastion.types import Norm

    private = method == "dp-sgd"
    if features not in ("none", "scatternet"):
        raise ConfigError(f"--features must be none or scatternet, got {features!r}")
    if not private and (features != "none" or keep_weights):
        raise ConfigError("--features and --keep-weights apply to --method dp-sgd only; drop them")
    if private:
        dp = PrivateTraining(
            epsilon=epsilon,
            delta=delta,
            max_grad_norm=max_grad_norm,
            epochs=epochs,
            batch_size=batch_size or 256,
            lr=lr if lr is not None else 0.5,
            fix_modules=fix_modules,
            initial_weights="keep" if keep_weights else "reset",
            grad_sample_mode=dp_mode,  # type: ignore[arg-type]  # validated with the other settings
            seed=seed,
        )
    else:
        settings = AdversarialTraining(
            method=method,  # type: ignore[arg-type]
            eps=eps,
            norm=Norm.LINF,
            steps=steps,
            beta=beta,
            epochs=epochs,
            batch_size=batch_size or 128,
            lr=lr,
            seed=seed,
            check_samples=check_samples,
        )
    if not model.is_file():
        raise ConfigError(f"model file {model} does not exist")
    data_name = data or card_dataset(model)
    if data_name is None:
        raise ConfigError(
            f"{model.name} names no dataset: pass --data (a built-in name, or an .npz, CSV or image folder)"
        )
    dataset = read_data(
        data_name,
        label_column=label_column,
        image_size=image_size,
        channels=channels,
        scale=scale,
        bounds=bounds,
        input_shape=input_shape,
    )
    if dataset.x_train.shape[0] == 0:
        raise ConfigError(
            f"{data_name} has no training split: give an .npz with x_train, y_train (and x_test, y_test to assess on)"
        )
    loaded = read_model(model, dataset, arch=arch, trust=trust, input_shape=input_shape, bounds=bounds)
    if not isinstance(loaded.classifier, TorchClassifier):
        raise ConfigError(
            f"{model.name} loads without gradients ({loaded.format}); hardening needs a torch model "
            "(safetensors, .pt2, TorchScript, or ONNX that onnx2torch converts)"
        )
    pol = load_policy(policy)
    n_test = int(dataset.x_test.shape[0])
    pol = pol.model_copy(update={"samples": samples if samples is not None else min(pol.samples, n_test)})
    directory = checkpoint_dir or out.with_name(out.stem + ".checkpoints")
    new_arch = None
    trainee = loaded.classifier
    if features == "scatternet":
        from bastion.models.zoo.nets import build

        if keep_weights:
            raise ConfigError("--keep-weights cannot apply to --features scatternet, which replaces the model")
        new_arch = "scatternet-linear"
        trainee = TorchClassifier(build(new_arch, dataset.spec.input_shape, dataset.spec.num_classes), dataset.spec)
    if private:
        check_private(trainee, dataset.x_train, dataset.y_train, dp, checkpoint_dir=directory, resume=resume)
    else:
        check_training(
            loaded.classifier, dataset.x_train, dataset.y_train, settings, checkpoint_dir=directory, resume=resume
        )
    if new_arch is not None and out.suffix != ".safetensors":
        raise ConfigError(f"--out {out}: a {new_arch} model is written as .safetensors with a card; name it so")
    if new_arch is None and (
        (loaded.card is not None and out.suffix != ".safetensors") or (loaded.card is None and out.suffix != ".pt2")
    ):
        want = ".safetensors (it has a Bastion card)" if loaded.card is not None else ".pt2 (torch.export)"
        raise ConfigError(f"--out {out}: the hardened {model.name} is written as {want}; name the output so")
    original = copy.deepcopy(loaded.classifier)
    with progress_bar() as bar:
        if private:
            dp_result = private_train(
                trainee,
                dataset.x_train,
                dataset.y_train,
                dp,
                checkpoint_dir=directory,
                resume=resume,
                progress=bar,
            )
            hardened, record, seconds = dp_result.classifier, dp_result.training_record(), dp_result.seconds
            what = (
                f"dp-sgd to epsilon {dp_result.epsilon:.3g} at delta {dp.delta:g} "
                f"(noise multiplier {dp_result.noise_multiplier:.3g})"
                + (f" as ScatterNet + linear ({new_arch})" if new_arch else "")
                + (f", resumed after epoch {dp_result.resumed_from}" if dp_result.resumed_from else "")
            )
        else:
            result = adversarial_train(
                loaded.classifier,
                dataset.x_train,
                dataset.y_train,
                settings,
                checkpoint_dir=directory,
                resume=resume,
                progress=bar,
            )
            hardened, record, seconds = result.classifier, result.training_record(), result.seconds
            what = f"{settings.method} (best epoch {result.best_epoch})"
            for note in result.notes:
                console.print(f"[yellow]note[/]: {note}")
    import torch

    with torch.no_grad():
        clean = float((hardened.predict_logits(dataset.x_test).argmax(1) == dataset.y_test).float().mean())
    written = _save(loaded, hardened.module, out, record, clean, dataset, new_arch)
    console.print(f"[green]hardened[/] with {what} in {seconds:.1f}s: clean test accuracy {clean:.2%}; wrote {written}")
    info = loaded.info()
    console.print("[bold]before[/]")
    before = assess_model(original, info, dataset, pol, report / "before")
    console.print("[bold]after[/]")
    after = assess_model(hardened, {**info, "name": f"{info.get('name')} ({method})"}, dataset, pol, report / "after")
    from bastion.attacks.inference import loss_threshold

    n_mia = min(int(dataset.x_train.shape[0]), n_test, 1000)
    members, non_members = (
        (dataset.x_train[:n_mia], dataset.y_train[:n_mia]),
        (dataset.x_test[:n_mia], dataset.y_test[:n_mia]),
    )
    membership = {
        "before": loss_threshold(original, members, non_members).to_dict(),
        "after": loss_threshold(hardened, members, non_members).to_dict(),
    }
    console.print(
        f"membership inference (loss threshold, {n_mia} training vs {n_mia} test inputs): AUC "
        f"{membership['before']['auc']:.3f} before, {membership['after']['auc']:.3f} after (0.5 is chance)"
    )
    html, _ = write_comparison(before, after, {**record, "membership_inference": membership}, report)
    console.print(f"before/after report: [bold]{html}[/]")
    if any(f.get("severity") == "error" for f in after.sanity):
        console.print("[red]the hardened model failed a sanity check[/]: its robust accuracy may be masked gradients")
        raise typer.Exit(1)
    if after.gate in ("fail", "inconclusive"):  # the policy's thresholds judge the hardened model, as assess does
        console.print(
            f"[red]policy gate {after.gate} on the hardened model[/]: {escape('; '.join(after.gate_reasons))}"
        )
        raise typer.Exit(1 if after.gate == "fail" else 3)
