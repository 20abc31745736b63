"""Converted models on disk: safetensors (tensors only, no code) with the kind, activation and accuracy in its
metadata, so the server side can load exactly what `bastion encrypt-model` checked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bastion.defenses.encrypted.linear import LinearWeights
from bastion.defenses.encrypted.mlp import PolyMLPWeights
from bastion.errors import ArtifactError


def save_converted(weights: LinearWeights | PolyMLPWeights, path: str | Path, info: dict[str, Any]) -> Path:
    from safetensors.torch import save_file

    p = Path(path)
    if p.suffix != ".safetensors":
        raise ArtifactError(f"a converted model is written as .safetensors; name it so (got {p.name})")
    if isinstance(weights, LinearWeights):
        tensors = {"weight": weights.weight, "bias": weights.bias}
        meta = {"kind": "linear"}
    else:
        tensors = {"w1": weights.w1, "b1": weights.b1, "w2": weights.w2, "b2": weights.b2}
        meta = {"kind": "poly-mlp", "poly": json.dumps(list(weights.poly))}
    p.parent.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()},
        str(p),
        metadata={**meta, "info": json.dumps(info)},
    )
    return p


def load_converted(path: str | Path) -> tuple[LinearWeights | PolyMLPWeights, dict[str, Any]]:
    from safetensors import safe_open

    p = Path(path)
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
            t = {k: f.get_tensor(k).double().numpy() for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    except Exception as e:  # safetensors raises several kinds on a bad file
        raise ArtifactError(
            f"{p.name} is not a converted model (safetensors from `bastion encrypt-model`): {e}"
        ) from None
    info = json.loads(meta.get("info", "{}"))
    if meta.get("kind") == "linear":
        return LinearWeights(t["weight"], t["bias"]), info
    if meta.get("kind") == "poly-mlp":
        a, b, c = json.loads(meta["poly"])
        return PolyMLPWeights(t["w1"], t["b1"], (float(a), float(b), float(c)), t["w2"], t["b2"]), info
    raise ArtifactError(f"{p.name} names no known converted-model kind ({meta.get('kind')!r})")
