"""ONNX files: black-box through onnxruntime, white-box through a conversion to a torch module (onnx2torch).

The conversion is only used when it reproduces onnxruntime's answers (same labels on every checked input and
scores within a tolerance); otherwise the model is assessed black-box and the report says why.
"""

from __future__ import annotations

import logging
import sys
import types
from pathlib import Path
from typing import Any

import torch

from bastion.errors import ArtifactError
from bastion.models.formats.base import Access, LoadContext, LoadedClassifier, resolve_spec, sample_inputs
from bastion.models.onnx import OnnxClassifier, onnx_io_shapes, open_session
from bastion.models.torch import TorchClassifier
from bastion.models.zoo.card import sha256_file

log = logging.getLogger(__name__)
AGREEMENT_ATOL = 1e-3  # largest score difference (relative to the score range) the two paths may show


def load_onnx(path: Path, ctx: LoadContext) -> LoadedClassifier:
    raw = path.read_bytes()
    session = open_session(raw)  # one session: read for the shapes, then used for every query
    in_shape, out_shape = onnx_io_shapes(session)
    source = f"ONNX model {path.name}"
    classes = out_shape[-1] if len(out_shape) == 2 else None
    spec = resolve_spec(ctx.hints, source=source, input_shape=in_shape[1:] or None, num_classes=classes)
    runtime = OnnxClassifier(raw, spec, session=session)
    check = sample_inputs(spec, ctx.check_inputs)
    reference = runtime.predict_logits(check)
    runtime.queries = 0
    if reference.shape[1] != spec.num_classes:
        raise ArtifactError(f"{source} has {reference.shape[1]} outputs but the data has {spec.num_classes} classes")
    digest = sha256_file(path)

    def loaded(clf: Any, access: Access, note: str, extra: dict[str, Any] | None = None) -> LoadedClassifier:
        return LoadedClassifier(clf, "onnx", access, path, digest, path.stem, (note,), extra=extra or {})

    if not ctx.white_box:
        return loaded(runtime, "black-box", "onnxruntime (black-box: asked for)")
    module, why = _convert(raw)
    if module is None:
        note = f"onnxruntime (black-box): the graph could not be converted to torch ({why})"
        return loaded(runtime, "black-box", note)
    converted = TorchClassifier(module, spec, device=ctx.device)
    with torch.no_grad():
        mine = converted.predict_logits(check).cpu()
    converted.queries = 0
    scale = float((reference.max() - reference.min()).clamp_min(1.0))
    diff = float((mine - reference).abs().max()) / scale
    same = bool((mine.argmax(1) == reference.argmax(1)).all())
    if not same or diff > AGREEMENT_ATOL:
        note = (
            f"onnxruntime (black-box): the torch conversion disagrees with onnxruntime (labels equal: {same}, "
            f"largest relative score difference {diff:.2g})"
        )
        return loaded(runtime, "black-box", note)
    note = (
        f"white-box through onnx2torch; agrees with onnxruntime on {check.shape[0]} inputs "
        f"(largest relative score difference {diff:.2g})"
    )
    return loaded(converted, "white-box", note, {"runtime_check": diff})


def _convert(raw: bytes) -> tuple[Any, str]:
    import onnx

    try:
        convert = _onnx2torch()
    except ImportError as e:
        return None, f"onnx2torch is not installed: {e}"
    try:
        module = convert(onnx.load_model_from_string(raw))
    except Exception as e:  # an operator onnx2torch has no converter for (it raises several types): black-box
        return None, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'unsupported graph'}"
    return module.eval(), ""


def _onnx2torch() -> Any:
    """Import onnx2torch even where torchvision cannot load (a CPU torch beside a CUDA torchvision wheel).

    onnx2torch imports torchvision only for the detection operators NonMaxSuppression and RoiAlign, which no
    classifier uses. When torchvision fails to import, those two operators are given a stand-in that fails with a
    clear message, and every other converter works as usual.
    """
    try:
        from onnx2torch import convert
    except ImportError:
        raise
    except Exception:  # torchvision's import failed inside onnx2torch
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith(("torchvision.", "onnx2torch"))]:
            del sys.modules[name]

        def unavailable(*args: object, **kwargs: object) -> None:
            raise ArtifactError("this ONNX graph uses detection operators that need a working torchvision")

        tv, ops = types.ModuleType("torchvision"), types.ModuleType("torchvision.ops")
        ops.nms = ops.box_convert = ops.roi_align = unavailable  # type: ignore[attr-defined]
        tv.ops = ops  # type: ignore[attr-defined]
        sys.modules["torchvision"], sys.modules["torchvision.ops"] = tv, ops
        from onnx2torch import convert
    return convert
