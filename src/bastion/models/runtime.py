"""Gradient-free inference through onnxruntime, for the hot paths that never need a gradient (the gateway's model
calls, its detectors and its monitors' encoders).

On a CPU, a small network called on one or two inputs spends most of its time in PyTorch's per-operator dispatch,
not in arithmetic; onnxruntime runs the same graph with far less of it (measured on this machine, one request's
shapes: the Fashion-MNIST reference CNN on an input and its squeezed copy 3.0x faster, MagNet's autoencoder 2.3x, the
similarity encoder 2.4x, each against PyTorch in channels_last). :class:`OrtModule` exports a module to ONNX in
memory once, checks that onnxruntime's outputs equal PyTorch's on an example, and runs it; anything that does not
export or does not match stays on PyTorch (:func:`compile_module` returns ``None`` and logs why).

``taps`` are layers whose *inputs* the exported graph also returns (flattened to (N, D)), so a caller that reads
features during the model's forward pass (``bastion.models.features.FeatureTap``: Mahalanobis) still gets them from
the one onnxruntime call. The compiled copy is frozen: weights changed afterwards are not seen (compile again).
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)


class _Exported(nn.Module):
    """``module`` after ``prepare`` (e.g. normalisation), returning its output and the inputs of the tapped layers."""

    def __init__(self, module: nn.Module, taps: Sequence[nn.Module], prepare: Callable[[Tensor], Tensor] | None):
        super().__init__()
        self.module, self.taps, self.prepare = module, list(taps), prepare

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        got: list[Tensor] = []
        handles = [t.register_forward_pre_hook(lambda _m, a: got.append(a[0].flatten(1))) for t in self.taps]
        try:
            out = self.module(self.prepare(x) if self.prepare is not None else x)
        finally:
            for h in handles:
                h.remove()
        if len(got) != len(self.taps):
            raise RuntimeError(f"{len(self.taps)} tapped layer(s) ran {len(got)} time(s) in one forward pass")
        return (out, *got)


class OrtModule:
    """A module exported to ONNX and run by onnxruntime: ``self(x)`` returns ``(output, [tap inputs])``."""

    def __init__(
        self,
        module: nn.Module,
        example: Tensor,
        *,
        taps: Sequence[nn.Module] = (),
        prepare: Callable[[Tensor], Tensor] | None = None,
        threads: int | None = None,
        atol: float = 1e-4,
    ) -> None:
        self.taps = tuple(taps)
        self._tap_index = {id(t): i for i, t in enumerate(self.taps)}
        wrapper = _Exported(module, self.taps, prepare).eval()
        example = example.detach().float().contiguous()
        names = ["out"] + [f"tap{i}" for i in range(len(self.taps))]
        buf = io.BytesIO()
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice; torch is pinned
            # a tracer warning means data-dependent Python (``.item()``, ``if tensor:``) was frozen into the graph
            # for the example's values: the export would be wrong for other inputs
            warnings.simplefilter("error", torch.jit.TracerWarning)
            torch.onnx.export(
                wrapper,
                (example,),
                buf,  # type: ignore[arg-type]
                dynamo=False,
                input_names=["x"],
                output_names=names,
                dynamic_axes={n: {0: "n"} for n in ["x", *names]},
            )
        self._onnx, self._threads = buf.getvalue(), threads or torch.get_num_threads()
        self.session = self._session()
        for sample in (example, example[:1]):  # the example's batch size must not be frozen in either
            with torch.no_grad():
                expected = wrapper(sample)
            got = self.run(sample)
            for name, e, g in zip(names, expected, (got[0], *got[1]), strict=True):
                if e.shape != g.shape or not torch.allclose(e, g, atol=atol, rtol=1e-3):
                    diff = float((e - g).abs().max()) if e.shape == g.shape else float("nan")
                    raise ValueError(f"onnxruntime's {name} differs from PyTorch's (by {diff:.3g}, shape {g.shape})")

    def tap_index(self, layer: nn.Module) -> int | None:
        """Position of ``layer``'s input among the exported features, or None when it was not exported."""
        return self._tap_index.get(id(layer))

    def _session(self) -> Any:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = self._threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        return ort.InferenceSession(self._onnx, so, providers=["CPUExecutionProvider"])

    def __getstate__(self) -> dict[str, object]:  # copies (deepcopy, pickle) rebuild the session from the graph
        return {k: v for k, v in self.__dict__.items() if k != "session"}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self.session = self._session()

    def run(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        feed = {"x": np.ascontiguousarray(x.detach().float().cpu().numpy())}
        outs = self.session.run(None, feed)
        tensors = [torch.from_numpy(o) for o in outs]
        return tensors[0], tensors[1:]

    __call__ = run


def example_inputs(input_shape: tuple[int, ...], bounds: tuple[float, float] = (0.0, 1.0)) -> Tensor:
    """Three fixed pseudo-random inputs within ``bounds``: what an export is traced and checked on."""
    lo, hi = bounds
    return lo + (hi - lo) * torch.rand((3, *input_shape), generator=torch.Generator().manual_seed(0))


def compile_module(
    module: nn.Module,
    example: Tensor,
    *,
    taps: Sequence[nn.Module] = (),
    prepare: Callable[[Tensor], Tensor] | None = None,
    threads: int | None = None,
    what: str = "model",
) -> OrtModule | None:
    """An :class:`OrtModule` for ``module``, or ``None`` (logged) when it does not export or its outputs differ."""
    if module.training:
        raise ValueError("compile a module in eval mode")
    memory_format = torch.channels_last if _is_channels_last(module) else None
    if memory_format is not None:  # the exporter traces contiguous tensors
        module.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    try:
        return OrtModule(module, example, taps=taps, prepare=prepare, threads=threads)
    except Exception as e:  # the exporter and onnxruntime raise many kinds; PyTorch stays, which is always correct
        log.warning("%s stays on PyTorch (onnxruntime not used): %s", what, str(e).splitlines()[0] if str(e) else e)
        return None
    finally:
        if memory_format is not None:
            module.to(memory_format=memory_format)  # type: ignore[call-overload]


def _is_channels_last(module: nn.Module) -> bool:
    return any(
        p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
        for p in module.parameters()
    )
