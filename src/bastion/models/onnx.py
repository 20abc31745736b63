"""Black-box adapter for an ONNX model run by onnxruntime (no Python code from the file is ever executed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from bastion._torch import batch_slices
from bastion._validate import raise_if, tensor_problems
from bastion.errors import ArtifactError, ConfigError
from bastion.types import ModelSpec


def _session(model: str | Path | bytes, threads: int | None) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    source = model if isinstance(model, bytes) else str(model)
    try:
        return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types for every malformed graph
        raise ArtifactError(f"onnxruntime cannot load the ONNX model: {str(e).splitlines()[0]}") from None


def open_session(model: str | Path | bytes, threads: int | None = None) -> Any:
    """An onnxruntime session on the CPU (``threads`` defaults to torch's thread count)."""
    return _session(model, threads if threads is not None else torch.get_num_threads())


def onnx_io_shapes(session: Any) -> tuple[tuple[int | None, ...], tuple[int | None, ...]]:
    """A session's first input and first output shapes; symbolic dimensions (such as a batch axis) are ``None``."""
    return _shape(session.get_inputs()[0].shape), _shape(session.get_outputs()[0].shape)


def _shape(dims: list[Any]) -> tuple[int | None, ...]:
    return tuple(d if isinstance(d, int) and d > 0 else None for d in dims)


class OnnxClassifier:
    """Scores from an ONNX graph evaluated by onnxruntime on the CPU: black-box access, no gradient.

    The graph's first input takes ``(N, *spec.input_shape)`` float32 inputs and its first output is read as
    ``(N, K)`` scores (logits or probabilities: attacks only compare them). Batches are sent in chunks of
    ``max_batch`` rows; a graph exported with a fixed batch size of 1 is fed one row at a time.

    Example::

        clf = OnnxClassifier("model.onnx", ModelSpec(input_shape=(1, 28, 28), num_classes=10))
        scores = clf.predict_logits(x)
    """

    def __init__(
        self,
        model: str | Path | bytes,
        spec: ModelSpec,
        *,
        max_batch: int = 256,
        threads: int | None = None,
        session: Any = None,
    ) -> None:
        if not isinstance(spec, ModelSpec):
            raise ConfigError(f"spec must be a ModelSpec, got {type(spec).__name__}")
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise ConfigError(f"max_batch must be a positive int, got {max_batch!r}")
        self._session = session if session is not None else open_session(model, threads)  # reuse one if given
        first = self._session.get_inputs()[0]
        self._input = first.name
        self._output = self._session.get_outputs()[0].name
        dims = _shape(first.shape)
        if dims and dims[0] is not None:  # a fixed batch axis (often 1): feed that many rows at a time
            max_batch = min(max_batch, dims[0])
            self._fixed_batch: int | None = dims[0]
        else:
            self._fixed_batch = None
        self.max_batch = max_batch
        self.spec = spec
        self.queries = 0
        self.source = str(model) if not isinstance(model, bytes) else "<bytes>"

    def predict_logits(self, x: Tensor) -> Tensor:
        """Scores ``(N, K)`` for inputs ``(N, *spec.input_shape)``; counts N queries."""
        raise_if(tensor_problems(x, name="x", input_shape=self.spec.input_shape), "model input")
        arr = x.detach().to("cpu", torch.float32).contiguous().numpy()
        out = []
        for s in batch_slices(arr.shape[0], self.max_batch):
            chunk = arr[s]
            pad = 0
            if self._fixed_batch is not None and chunk.shape[0] < self._fixed_batch:
                pad = self._fixed_batch - chunk.shape[0]
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)])
            try:
                y = self._session.run([self._output], {self._input: chunk})[0]
            except Exception as e:
                raise ConfigError(
                    f"the ONNX model rejected inputs of shape {tuple(chunk.shape)}: {str(e).splitlines()[0]}; "
                    "check --input-shape against the model's input"
                ) from None
            out.append(y[: y.shape[0] - pad] if pad else y)
        self.queries += int(arr.shape[0])
        scores = torch.from_numpy(np.concatenate(out)).float()
        if scores.dim() != 2 or scores.shape[1] != self.spec.num_classes:
            raise ArtifactError(
                f"the ONNX model's first output has shape {tuple(scores.shape)}, expected (N, {self.spec.num_classes})"
            )
        return scores

    def __repr__(self) -> str:
        return f"OnnxClassifier({self.source!r}, spec={self.spec})"
