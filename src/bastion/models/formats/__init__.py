"""Load a user's model file, whatever its format, without running untrusted code.

The format is read from the file's bytes (:func:`detect_format`), never trusted from its name; each format has one
loader. Pickled files (``torch.save`` checkpoints, joblib, ``.pkl``) are refused: unpickling runs arbitrary code.

=================  ===============================  ==========================================
format             loader                            access
=================  ===============================  ==========================================
safetensors        zoo card, or ``--arch`` factory   white-box
ONNX               onnxruntime / onnx2torch          white-box when the conversion agrees
torch.export .pt2  ``torch.export.load``             white-box
TorchScript        ``torch.jit.load``                white-box
skops              ``skops.io.load`` (trusted types) black-box
=================  ===============================  ==========================================

Example::

    loaded = load_classifier("model.onnx", hints=SpecHints.from_spec(data.spec), check_inputs=data.x_test)
    loaded.classifier.predict_logits(x)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from bastion._registry import Registry
from bastion.errors import ArtifactError
from bastion.models.formats.base import LoadContext, LoadedClassifier, SpecHints
from bastion.models.formats.sniff import detect_format

__all__ = ["FORMATS", "LoadedClassifier", "SpecHints", "detect_format", "load_classifier"]

Loader = Callable[[Path, LoadContext], LoadedClassifier]
FORMATS: Registry[Loader] = Registry("model format")


def _lazy(module: str, name: str) -> Loader:
    def load(path: Path, ctx: LoadContext) -> LoadedClassifier:
        import importlib

        return getattr(importlib.import_module(f"bastion.models.formats.{module}"), name)(path, ctx)

    return load


FORMATS.add("safetensors", _lazy("safetensors", "load_safetensors"))
FORMATS.add("onnx", _lazy("onnx", "load_onnx"))
FORMATS.add("torch-export", _lazy("torch_export", "load_torch_export"))
FORMATS.add("torchscript", _lazy("torchscript", "load_torchscript"))
FORMATS.add("skops", _lazy("skops", "load_skops"))

PICKLE_REFUSAL = (
    "{name} is a Python pickle ({kind}); unpickling can run arbitrary code, so Bastion never loads one. Convert it "
    "where you trust it: a torch model with torch.export.save (.pt2), torch.jit.save, torch.onnx.export (.onnx) or "
    "safetensors.torch.save_file + --arch; a scikit-learn model with skops.io.dump (.skops)"
)


def load_classifier(
    path: str | Path,
    *,
    hints: SpecHints | None = None,
    arch: str | None = None,
    trusted_types: Sequence[str] = (),
    white_box: bool = True,
    device: str | torch.device | None = None,
    check_inputs: torch.Tensor | None = None,
) -> LoadedClassifier:
    """Load the model in ``path`` as a classifier, with its spec joined from the file and ``hints``.

    Args:
        hints: what the data (or the user) says about inputs, classes and bounds; the file must agree with it.
        arch: ``package.module:factory`` for bare safetensors weights (user code: name only code you trust).
        trusted_types: skops types the user trusts beyond skops' defaults.
        white_box: False assesses an ONNX model through onnxruntime only.
        check_inputs: inputs used to check that an ONNX conversion reproduces onnxruntime (the test data).
    """
    p = Path(path)
    if not p.is_file():
        raise ArtifactError(f"model file {p} does not exist")
    fmt = detect_format(p)
    if fmt == "pickle":
        kind = "a torch.save checkpoint" if p.suffix.lower() in (".pt", ".pth", ".ckpt", ".bin") else "pickle/joblib"
        raise ArtifactError(PICKLE_REFUSAL.format(name=p.name, kind=kind))
    if fmt == "unknown":
        raise ArtifactError(
            f"{p.name} is not a model file Bastion can read; supported: safetensors (+ card or --arch), ONNX, "
            "torch.export (.pt2), TorchScript (torch.jit.save) and skops (.skops)"
        )
    ctx = LoadContext(
        hints=hints or SpecHints(),
        arch=arch,
        trusted_types=tuple(trusted_types),
        white_box=white_box,
        device=device,
        check_inputs=check_inputs,
    )
    if arch is not None and fmt != "safetensors":
        raise ArtifactError(f"--arch applies to safetensors weights only; {p.name} is {fmt} and carries its graph")
    return FORMATS.get(fmt)(p, ctx)
