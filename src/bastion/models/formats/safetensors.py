"""safetensors weights: Bastion's own (with a JSON model card beside them) or the user's, with ``--arch``.

safetensors holds tensors only, so it cannot carry code. The architecture comes either from Bastion's zoo (named in
the card, whose recorded sha256 the weights must match) or from a factory the user names as
``package.module:function``. That factory is the user's own Python code and is run as such: name only code you trust.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from torch import nn

from bastion.errors import ArtifactError, ConfigError
from bastion.models.formats.base import (
    LoadContext,
    LoadedClassifier,
    module_spec,
    require_module,
)
from bastion.models.torch import TorchClassifier
from bastion.models.zoo.card import card_path, load_model, sha256_file


def load_safetensors(path: Path, ctx: LoadContext) -> LoadedClassifier:
    if ctx.arch is None:
        if not card_path(path).is_file():
            raise ArtifactError(
                f"{path.name} holds weights only and has no Bastion model card ({card_path(path).name}) beside it; "
                "name the architecture with --arch package.module:factory (a function returning the nn.Module)"
            )
        zoo = load_model(path, device=ctx.device)
        card = zoo.card
        hints = ctx.hints
        if hints.input_shape is not None and hints.input_shape != card.spec.input_shape:
            raise ArtifactError(
                f"model {card.name} takes inputs of shape {card.spec.input_shape} but the data has {hints.input_shape};"
                f" assess it on the data it was trained for ({card.dataset.get('name', 'see its card')})"
            )
        if hints.num_classes is not None and hints.num_classes != card.spec.num_classes:
            raise ArtifactError(
                f"model {card.name} has {card.spec.num_classes} outputs but the data has {hints.num_classes} classes; "
                f"assess it on the data it was trained for ({card.dataset.get('name', 'see its card')})"
            )
        return LoadedClassifier(
            zoo.classifier,
            format="bastion-safetensors",
            access="white-box",
            path=path,
            sha256=card.weights_sha256,
            name=card.name,
            notes=(f"Bastion zoo model ({card.architecture}), weights checked against the card",),
            card=card,
        )
    module = build_from_factory(ctx.arch)
    raw = path.read_bytes()
    try:
        state = load_safetensors_bytes(raw)
    except (SafetensorError, ValueError) as e:
        raise ArtifactError(f"{path.name} is not a valid safetensors file: {e}") from None
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise ArtifactError(f"the weights in {path.name} do not fit the module from {ctx.arch}: {first}") from None
    module.eval()
    source = f"model {path.name} ({ctx.arch})"
    spec = module_spec(module, ctx.hints, source)
    clf = TorchClassifier(module, spec, device=ctx.device)
    return LoadedClassifier(
        clf,
        format="safetensors",
        access="white-box",
        path=path,
        sha256=sha256_file(path),
        name=path.stem,
        notes=(f"safetensors weights in the architecture from {ctx.arch} (user code, trusted by the user)",),
        extra={"arch": ctx.arch},
    )


def build_from_factory(arch: str) -> nn.Module:
    """Import ``package.module:factory`` and call it with no arguments; it must return an ``nn.Module``."""
    mod_name, sep, attr = arch.partition(":")
    if not sep or not mod_name or not attr:
        raise ConfigError(f"--arch must look like package.module:factory, got {arch!r}")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise ConfigError(
            f"cannot import {mod_name!r} for --arch: {e}; put its folder on PYTHONPATH or install its package"
        ) from None
    factory = getattr(mod, attr, None)
    if not callable(factory):
        raise ConfigError(f"{mod_name} has no callable {attr!r} (from --arch {arch})")
    return require_module(factory(), f"--arch {arch}")
