"""Build each served model's monitors from the configuration, calibrated on clean (training) data of its input space."""

from __future__ import annotations

from pathlib import Path

import torch

from bastion.data import load_dataset
from bastion.defenses.ensemble import Ensemble
from bastion.errors import ConfigError
from bastion.gateway.config import GatewayConfig
from bastion.models.zoo import read_card
from bastion.monitors import MONITORS
from bastion.monitors.base import Monitor

CALIBRATION_INPUTS = 12_000  # the probing monitor trains its encoder on 10,000 and calibrates on 2,000 unseen


def clean_inputs(config: GatewayConfig, name: str, model: Ensemble, first: Path | None = None) -> torch.Tensor:
    """Inputs to calibrate ``name``'s monitors on: ``monitors.baseline``, else the dataset named by the card of its
    first member (``first``: that member's file; default the first of the entry's paths)."""
    dataset = config.monitors.baseline
    if dataset is None:
        entry = config.models[name]
        first = first if first is not None else (entry.paths[0] if entry.paths else Path(name))
        if not first.with_suffix(".json").is_file():
            raise ConfigError(
                f"model {name!r} ({first.name}) names no dataset to calibrate its monitors on; set monitors.baseline "
                "to a built-in dataset or the path of an .npz / CSV / image folder of its inputs (or disable the monitors)"
            )
        dataset = str(read_card(first).dataset.get("name", ""))
    data = load_dataset(dataset)
    # calibrate on data the clients will not send: the training split, or the user's file when it has no split
    x = (data.x_train if data.x_train.shape[0] else data.x_test)[:CALIBRATION_INPUTS]
    if tuple(x.shape[1:]) != tuple(model.spec.input_shape):
        raise ConfigError(
            f"monitors.baseline dataset {dataset!r} has inputs {tuple(x.shape[1:])}, model {name!r} takes "
            f"{model.spec.input_shape}: name a dataset of the model's input space"
        )
    lo, hi = model.spec.bounds
    a, b = float(x.min()), float(x.max())
    if a < lo or b > hi:
        raise ConfigError(
            f"monitors.baseline dataset {dataset!r} spans [{a:g}, {b:g}], outside model {name!r}'s input range "
            f"[{lo:g}, {hi:g}] (the default when the model file states none): set bounds: [{a:g}, {b:g}] in the "
            "model's entry, or give data scaled like the model's inputs"
        )
    return x


def build_monitors(
    config: GatewayConfig, models: dict[str, Ensemble], clean: dict[str, torch.Tensor] | None = None
) -> dict[str, list[Monitor]]:
    """Per served model: every registered monitor that ``config.monitors`` enables, calibrated on clean inputs
    (``clean[name]``, else read as :func:`clean_inputs` does)."""
    mc = config.monitors
    enabled = [name for name in MONITORS.names() if mc.settings(name).enabled]
    out: dict[str, list[Monitor]] = {}
    for name, model in models.items():
        if not enabled:
            out[name] = []
            continue
        x = clean[name] if clean is not None and name in clean else clean_inputs(config, name, model)
        with torch.no_grad():
            probs = model.predict(x).probs
        out[name] = [MONITORS.get(m).build(mc.settings(m), x, probs) for m in enabled]
    return out
