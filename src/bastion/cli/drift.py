"""`bastion drift REFERENCE CURRENT`: has the data moved? MMD and per-feature KS tests, with a report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from bastion.cli._console import console
from bastion.cli._inputs import (
    BoundsOpt,
    ChannelsOpt,
    LabelOpt,
    ScaleOpt,
    ShapeOpt,
    SizeOpt,
    read_data,
)
from bastion.errors import ConfigError

Split = Literal["train", "test", "all"]


def _inputs(name: str, split: str, **opts: object):  # type: ignore[no-untyped-def]
    import torch

    data = read_data(name, **opts)  # type: ignore[arg-type]
    parts = {"train": [data.x_train], "test": [data.x_test], "all": [data.x_train, data.x_test]}[split]
    x = torch.cat([p for p in parts if p.shape[0]]) if any(p.shape[0] for p in parts) else parts[0]
    if x.shape[0] == 0:  # a user's file has one part: use it whichever split was asked for
        x = torch.cat([p for p in (data.x_train, data.x_test) if p.shape[0]])
    return data, x


def drift(
    reference: Annotated[str, typer.Argument(help="built-in dataset name, or .npz / CSV / image folder")],
    current: Annotated[str, typer.Argument(help="the data to compare with it, in the same forms")],
    reference_split: Annotated[str, typer.Option(help="train, test or all (built-in datasets)")] = "train",
    current_split: Annotated[str, typer.Option(help="train, test or all (built-in datasets)")] = "test",
    alpha: Annotated[float, typer.Option(help="MMD test: drift at permutation p-value <= alpha")] = 0.01,
    fdr: Annotated[float, typer.Option(help="KS tests: false-discovery rate over features")] = 0.01,
    permutations: Annotated[int, typer.Option(help="MMD permutations")] = 500,
    max_inputs: Annotated[int, typer.Option(help="inputs per side for the MMD test (subsampled, seeded)")] = 2000,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="folder for index.html and results.json")] = None,
    fail_on_drift: Annotated[bool, typer.Option(help="exit 1 when drift is found (a CI gate)")] = False,
    label_column: LabelOpt = "label",
    image_size: SizeOpt = None,
    channels: ChannelsOpt = None,
    scale: ScaleOpt = None,
    bounds: BoundsOpt = None,
    input_shape: ShapeOpt = None,
) -> None:
    """Compare two datasets' inputs: an MMD permutation test over whole inputs and a KS test per feature with
    false-discovery control. Prints the verdict; --out writes an HTML report with the moved features."""
    for flag, value in (("--reference-split", reference_split), ("--current-split", current_split)):
        if value not in ("train", "test", "all"):
            raise ConfigError(f"{flag} must be train, test or all, got {value!r}")
    if not 0 < alpha < 1 or not 0 < fdr < 1:
        raise ConfigError(f"--alpha and --fdr must be in (0, 1), got {alpha} and {fdr}")
    if permutations < 19:
        raise ConfigError(
            f"--permutations must be at least 19 (the smallest p-value is 1/(permutations+1)), got {permutations}"
        )
    if max_inputs < 20:
        raise ConfigError(f"--max-inputs must be at least 20, got {max_inputs}")
    from bastion.detectors.drift import ks_test, mmd_test
    from bastion.reports.drift import drift_summary, write_drift_report

    opts = dict(
        label_column=label_column,
        image_size=image_size,
        channels=channels,
        scale=scale,
        bounds=bounds,
        input_shape=input_shape,
    )
    ref_data, ref = _inputs(reference, reference_split, **opts)
    cur_data, cur = _inputs(current, current_split, **opts)
    if tuple(ref.shape[1:]) != tuple(cur.shape[1:]):
        raise ConfigError(
            f"{reference} has inputs {tuple(ref.shape[1:])} and {current} {tuple(cur.shape[1:])}: compare data of "
            "one kind (--image-size and --channels can make image folders match)"
        )
    with console.status(f"testing {ref.shape[0]} reference against {cur.shape[0]} current inputs"):
        ks = ks_test(ref, cur, fdr=fdr)
        mmd = mmd_test(ref, cur, permutations=permutations, max_inputs=max_inputs)
    summary = drift_summary(
        ks,
        mmd,
        alpha=alpha,
        reference={
            "data": reference,
            "split": reference_split,
            "inputs": int(ref.shape[0]),
            "sha256": ref_data.provenance.sha256,
        },
        current={
            "data": current,
            "split": current_split,
            "inputs": int(cur.shape[0]),
            "sha256": cur_data.provenance.sha256,
        },
    )
    colour = "red" if summary["verdict"] == "drift" else "green"
    console.print(
        f"[{colour}]{summary['verdict']}[/]: MMD p {mmd.p_value:.3g} ({permutations} permutations), "
        f"{summary['ks']['drifted']} of {summary['ks']['features']} features moved (KS, FDR {fdr:g})"
    )
    if out is not None:
        html, _ = write_drift_report(summary, ks, tuple(ref.shape[1:]), out)
        console.print(f"report: {html}")
    if fail_on_drift and summary["verdict"] == "drift":
        raise typer.Exit(1)
