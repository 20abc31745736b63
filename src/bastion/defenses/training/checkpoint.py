"""Per-epoch training checkpoints without pickle: tensors in safetensors, everything else in JSON.

A checkpoint holds what an interrupted run needs to continue exactly where it stopped: the module's weights, the
optimizer's state (its per-parameter tensors and its hyperparameter groups), the random generator's state (data
order and attack randomness), the best weights so far, and the run's history. Loading never executes code from the
file (torch.save / pickle would).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from bastion.errors import ConfigError

FORMAT = 1


@dataclass
class Checkpoint:
    """What :func:`save_checkpoint` wrote and :func:`load_checkpoint` read."""

    epoch: int  # epochs completed
    meta: dict[str, Any]  # the run's settings, history and anything else JSON-able
    extra: dict[str, torch.Tensor] = field(default_factory=dict)  # further tensors (e.g. more generator states)


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            t = v if isinstance(v, torch.Tensor) else torch.tensor(v)
            tensors[f"opt/{pid}/{k}"] = t.detach().clone().contiguous()
    return tensors, sd["param_groups"]


def save_checkpoint(
    directory: Path,
    *,
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    best: dict[str, torch.Tensor],
    checkpoint: Checkpoint,
) -> None:
    """Write ``directory/checkpoint.safetensors`` and ``checkpoint.json`` (each replaced atomically)."""
    directory.mkdir(parents=True, exist_ok=True)
    opt_tensors, groups = _optimizer_tensors(optimizer)
    tensors = {f"model/{k}": v.detach().contiguous() for k, v in module.state_dict().items()}
    tensors.update({f"best/{k}": v.detach().contiguous() for k, v in best.items()})
    tensors.update(opt_tensors)
    tensors["rng"] = generator.get_state()
    tensors.update({f"extra/{k}": v.detach().contiguous() for k, v in checkpoint.extra.items()})
    tmp = directory / "checkpoint.safetensors.tmp"
    save_file(tensors, str(tmp))
    os.replace(tmp, directory / "checkpoint.safetensors")
    meta = {"format": FORMAT, "epoch": checkpoint.epoch, "param_groups": groups, **checkpoint.meta}
    tmpj = directory / "checkpoint.json.tmp"
    tmpj.write_text(json.dumps(meta, indent=1))
    os.replace(tmpj, directory / "checkpoint.json")


def check_resumable(directory: str | Path | None, resume: bool) -> None:
    """With ``resume``, a ConfigError unless ``directory`` holds a checkpoint (both of its files): checked before
    any work by the training functions' validators, and again on loading."""
    if not resume:
        return
    if directory is None:
        raise ConfigError("resume needs the checkpoint folder of the interrupted run")
    d = Path(directory)
    if not (d / "checkpoint.safetensors").is_file() or not (d / "checkpoint.json").is_file():
        raise ConfigError(f"no checkpoint to resume in {d}: start without --resume (or name the folder)")


def load_checkpoint(
    directory: Path, *, module: nn.Module, optimizer: torch.optim.Optimizer, generator: torch.Generator
) -> tuple[Checkpoint, dict[str, torch.Tensor]]:
    """Restore module, optimizer and generator in place from ``directory``; returns the checkpoint and the best
    weights. A missing or foreign checkpoint is a ConfigError that says so."""
    check_resumable(directory, True)
    st, js = directory / "checkpoint.safetensors", directory / "checkpoint.json"
    meta = json.loads(js.read_text())
    if meta.get("format") != FORMAT:
        raise ConfigError(f"{js} is not a Bastion training checkpoint of format {FORMAT}")
    tensors = load_file(str(st))
    model = {k.removeprefix("model/"): v for k, v in tensors.items() if k.startswith("model/")}
    try:
        module.load_state_dict(model)
    except RuntimeError as e:
        raise ConfigError(
            f"the checkpoint in {directory} is for another architecture: {str(e).splitlines()[0]}"
        ) from None
    state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in tensors.items():
        if k.startswith("opt/"):
            _, pid, name = k.split("/", 2)
            state.setdefault(int(pid), {})[name] = v
    optimizer.load_state_dict({"state": state, "param_groups": meta.pop("param_groups")})
    generator.set_state(tensors["rng"])
    best = {k.removeprefix("best/"): v for k, v in tensors.items() if k.startswith("best/")}
    extra = {k.removeprefix("extra/"): v for k, v in tensors.items() if k.startswith("extra/")}
    epoch = int(meta.pop("epoch"))
    meta.pop("format")
    return Checkpoint(epoch, meta, extra), best
