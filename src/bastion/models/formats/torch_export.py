"""``torch.export`` programs (``.pt2``, written by ``torch.export.save``): a graph plus weights, white-box.

Loading reads the program's JSON graph and its tensors; tensors are read with ``torch.load``'s ``weights_only``
unpickler, which refuses any Python object that is not a tensor or a plain container.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from bastion.errors import ArtifactError
from bastion.models.formats.base import (
    LoadContext,
    LoadedClassifier,
    module_spec,
)
from bastion.models.torch import TorchClassifier
from bastion.models.zoo.card import sha256_file


class _Exported(nn.Module):
    """Holds an exported program's module; train()/eval() are no-ops (an exported graph has one mode)."""

    def __init__(self, gm: nn.Module) -> None:
        super().__init__()
        self.gm = gm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.gm(x)
        return out[0] if isinstance(out, (tuple, list)) else out

    def train(self, mode: bool = True) -> _Exported:
        self.training = False
        return self


def load_torch_export(path: Path, ctx: LoadContext) -> LoadedClassifier:
    source = f"exported program {path.name}"
    try:
        ep = torch.export.load(str(path))
    except Exception as e:  # torch raises many types for corrupt archives
        raise ArtifactError(f"cannot read {source}: {type(e).__name__}: {str(e).splitlines()[0]}") from None
    shape = _input_shape(ep)
    module = _Exported(ep.module())
    spec = module_spec(module, ctx.hints, source, shape)
    clf = TorchClassifier(module, spec, device=ctx.device)
    return LoadedClassifier(
        clf,
        format="torch-export",
        access="white-box",
        path=path,
        sha256=sha256_file(path),
        name=path.stem,
        notes=("torch.export program (white-box)",),
    )


def _input_shape(ep: torch.export.ExportedProgram) -> tuple[int | None, ...] | None:
    """The user input's shape from the graph's placeholder metadata; symbolic sizes become ``None``."""
    names = list(ep.graph_signature.user_inputs)
    if len(names) != 1:
        raise ArtifactError(f"the exported program takes {len(names)} inputs; Bastion assesses one-input classifiers")
    for node in ep.graph.nodes:
        if node.op == "placeholder" and node.name == names[0]:
            val = node.meta.get("val")
            if val is None:
                return None
            return tuple(int(d) if isinstance(d, int) else None for d in val.shape)[1:]
    return None
