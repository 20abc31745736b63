"""TorchScript archives (``torch.jit.save``): white-box.

TorchScript runs in its own interpreter and its archive is read by TorchScript's own unpickler, which builds only
TorchScript types, never arbitrary Python objects. The archive states no input shape: it comes from the data or
from ``--input-shape``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from bastion.errors import ArtifactError
from bastion.models.formats.base import (
    LoadContext,
    LoadedClassifier,
    module_spec,
)
from bastion.models.torch import TorchClassifier
from bastion.models.zoo.card import sha256_file


def load_torchscript(path: Path, ctx: LoadContext) -> LoadedClassifier:
    source = f"TorchScript archive {path.name}"
    try:
        with warnings.catch_warnings():  # torch 2.13 marks TorchScript deprecated; users still ship it
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(path), map_location="cpu")
    except Exception as e:  # torch raises RuntimeError and others for corrupt archives
        raise ArtifactError(f"cannot read {source}: {type(e).__name__}: {str(e).splitlines()[0]}") from None
    module.eval()
    spec = module_spec(module, ctx.hints, source)
    clf = TorchClassifier(module, spec, device=ctx.device)
    return LoadedClassifier(
        clf,
        format="torchscript",
        access="white-box",
        path=path,
        sha256=sha256_file(path),
        name=path.stem,
        notes=("TorchScript (white-box)",),
    )
