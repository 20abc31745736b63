"""Ghost clipping made fast: convolutions' per-example gradient norms without per-example gradients, and a norm
pass that computes no weight gradients.

Ghost clipping (Li et al. 2022; Bu et al. 2023) runs two backward passes: the first only to learn each example's
gradient *norm*, the second on the loss reweighted by the clipping factors, which yields the sum of clipped
gradients directly. Two costs of Opacus 1.6's version made a DP-SGD epoch of the tanh CNN 2.03x a non-private one
against the issue's 2x (bench/RESULTS.md):

**Convolution norms.** Opacus has norm samplers for linear and embedding layers; for a convolution it materialises
every example's weight gradient (zeros, an unfold, a batched product, two copies) and then takes its norm. Three
exact ways to the same norm:

- ``grouped``: the batch folded into the channels of one grouped convolution's weight gradient (groups = batch), so
  the per-example gradients come from one oneDNN kernel; fastest for first layers with few input channels.
- ``unfold``: im2col of the input and one batched product with the output gradient (Opacus's arithmetic, fewer
  copies).
- ``gram``: the ghost-norm identity ||G A^T||^2 = <A^T A, G^T G> over the L output positions (Goodfellow 2015; Li et
  al. 2022), cheap when L is small against the kernel's size and the output channels (deep layers).

Which is fastest depends on the layer's shape and the CPU (measured: 20 ms against Opacus's 80 ms for the tanh CNN's
first layer at batch 2048, but 85 against 62 for its second), so the first batch of each layer shape times each
candidate and the fastest is kept for that shape, as cuDNN's benchmark mode does. All three give the same norms up
to float rounding (tested against per-example gradients from ``torch.func``), for every padding and padding mode.

**The norm pass.** Opacus's first pass is a full ``backward()``: every layer's weight gradient is computed and then
thrown away (the first convolution's alone cost 74 ms a batch here, more than its forward). The norms need only the
gradients flowing *between* layers, which the hooks read; :class:`NormPass` asks autograd for exactly those.

**Book-keeping instead of the second pass** (Bu et al. 2023, "Differentially private optimization on large model
at small cost"). Opacus's second pass back-propagates the loss reweighted by the clipping factors c_i through the
whole network again. Every linear and convolution layer's clipped gradient sum, sum_i c_i * grad_i, can instead be
formed from the input and per-example output gradient the norm pass already held: (c * G)^T A for a linear layer,
one weight-gradient convolution of the input with c * G for a convolution (or the c-weighted sum of the per-example
gradients the grouped method computed anyway). When those layers own every trainable parameter the second pass is
skipped; otherwise (GroupNorm, embeddings, ...) Opacus's second pass runs. Both give the same step (tested).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.grad import conv2d_weight

from bastion.errors import ConfigError

NormFn = Callable[[nn.Conv2d, Tensor, Tensor, tuple[int, int]], tuple[Tensor, Tensor | None]]

_LOCK = threading.Lock()
_CHOICE: dict[tuple[Any, ...], str] = {}
_INSTALLED = False


def _grouped_gradients(layer: nn.Conv2d, a: Tensor, g: Tensor, padding: tuple[int, int]) -> Tensor:
    """Every example's weight gradient, (n, *weight.shape), from one grouped convolution's weight gradient."""
    n, c = a.shape[:2]
    o = g.shape[1]
    w = conv2d_weight(
        a.reshape(1, n * c, *a.shape[2:]),
        (n * o, c // layer.groups, *layer.kernel_size),
        g.reshape(1, n * o, *g.shape[2:]),
        stride=layer.stride,
        padding=padding,
        dilation=layer.dilation,
        groups=n * layer.groups,
    )
    return w.reshape(n, *layer.weight.shape)


def _grouped(layer: nn.Conv2d, a: Tensor, g: Tensor, padding: tuple[int, int]) -> tuple[Tensor, Tensor | None]:
    per_example = _grouped_gradients(layer, a, g, padding)
    return per_example.reshape(a.shape[0], -1).norm(dim=1), per_example


def _unfolded(layer: nn.Conv2d, a: Tensor, padding: tuple[int, int]) -> Tensor:
    # im2col on a channels_last tensor took 1.7 s against 55 ms for the same data in NCHW (measured, batch 2048)
    return F.unfold(a.contiguous(), layer.kernel_size, dilation=layer.dilation, padding=padding, stride=layer.stride)


def _unfold(layer: nn.Conv2d, a: Tensor, g: Tensor, padding: tuple[int, int]) -> tuple[Tensor, Tensor | None]:
    n = a.shape[0]
    per_example = torch.bmm(g.reshape(n, g.shape[1], -1), _unfolded(layer, a, padding).transpose(1, 2))
    return per_example.reshape(n, -1).norm(dim=1), None  # (n, O, K): not the weight's layout when groups > 1


def _gram(layer: nn.Conv2d, a: Tensor, g: Tensor, padding: tuple[int, int]) -> tuple[Tensor, Tensor | None]:
    n = a.shape[0]
    u = _unfolded(layer, a, padding)  # (n, K, L)
    gb = g.reshape(n, g.shape[1], -1)  # (n, O, L)
    squared = (torch.bmm(u.transpose(1, 2), u) * torch.bmm(gb.transpose(1, 2), gb)).sum((1, 2))
    return squared.clamp(min=0).sqrt(), None


def padded(layer: nn.Conv2d, a: Tensor) -> tuple[Tensor, tuple[int, int]]:
    """The layer's input and the zero padding its kernels then need: zero padding given as numbers is left to the
    kernels; ``padding="same"`` (possibly uneven) and reflect/replicate/circular padding are applied here exactly as
    ``nn.Conv2d`` applies them, so the norms are right for every padding (Opacus 1.6's per-example convolution
    gradients ignore ``padding_mode``; in ghost mode that would leave examples' real gradients unclipped)."""
    if layer.padding_mode == "zeros" and not isinstance(layer.padding, str):
        return a, (int(layer.padding[0]), int(layer.padding[1]))
    pads = layer._reversed_padding_repeated_twice  # what nn.Conv2d pads by: (left, right, top, bottom)
    if any(pads):
        mode = "constant" if layer.padding_mode == "zeros" else layer.padding_mode
        a = F.pad(a, pads, mode=mode)
    return a, (0, 0)


_METHODS: dict[str, NormFn] = {"grouped": _grouped, "unfold": _unfold, "gram": _gram}


def _candidates(layer: nn.Conv2d, a: Tensor, g: Tensor) -> list[str]:
    if layer.groups != 1:
        return ["grouped"]
    k = a.shape[1] * layer.kernel_size[0] * layer.kernel_size[1]
    o, positions = g.shape[1], g.shape[2] * g.shape[3]
    names = ["grouped", "unfold"]
    if positions * (k + o) <= 4 * o * k:  # the Gram matrices are L x L: hopeless (seconds) when L is large
        names.append("gram")
    return names


def _signature(layer: nn.Conv2d, a: Tensor) -> tuple[Any, ...]:
    return (
        layer.in_channels,
        layer.out_channels,
        layer.kernel_size,
        layer.stride,
        layer.padding,
        layer.dilation,
        layer.groups,
        tuple(a.shape[1:]),
        a.is_contiguous(),  # NCHW or not (channels_last): the kernels' speeds differ
        a.dtype,
        a.device.type,
    )


def choose(layer: nn.Conv2d, a: Tensor, g: Tensor, padding: tuple[int, int]) -> str:
    """The fastest method for this layer and input shape, timed once per shape (each candidate's best of three runs
    after a warm-up) and remembered for the process."""
    key = _signature(layer, a)
    with _LOCK:
        known = _CHOICE.get(key)
    if known is not None:
        return known
    names = _candidates(layer, a, g)
    timings: dict[str, float] = {}
    for name in names:
        fn = _METHODS[name]
        fn(layer, a, g, padding)  # warm-up (allocations, oneDNN's kernel choice)
        runs = []
        for _ in range(3):  # the best of three: one timing alone picked differently between runs
            t0 = time.perf_counter()
            fn(layer, a, g, padding)
            runs.append(time.perf_counter() - t0)
        timings[name] = min(runs)
    best = min(timings, key=timings.__getitem__)
    with _LOCK:
        _CHOICE[key] = best
    return best


def choices() -> dict[tuple[Any, ...], str]:
    """The method chosen for each layer shape seen so far (for the training record and for tests)."""
    with _LOCK:
        return dict(_CHOICE)


def conv2d_norm_sample(layer: nn.Conv2d, activations: list[Tensor], backprops: Tensor) -> dict[Tensor, Tensor]:
    """Opacus norm-sampler contract: each trainable parameter of ``layer`` -> its per-example gradient norms (n,)."""
    a = activations[0].to(backprops.dtype)
    g = backprops
    n = a.shape[0]
    out: dict[Tensor, Tensor] = {}
    if n == 0:
        return {p: a.new_zeros(0) for p in layer.parameters() if p.requires_grad}
    if layer.weight.requires_grad:
        a, padding = padded(layer, a)
        norms, per_example = _METHODS[choose(layer, a, g, padding)](layer, a, g, padding)
        _keep(layer, a, g, padding, per_example)
        out[layer.weight] = norms
    else:
        _keep(layer, a, g, (0, 0), None)  # only the bias trains; the activations are not needed
    if layer.bias is not None and layer.bias.requires_grad:
        out[layer.bias] = g.sum((2, 3)).norm(dim=1)
    return out


def linear_norm_sample(layer: nn.Linear, activations: list[Tensor], backprops: Tensor) -> dict[Tensor, Tensor]:
    """Opacus's linear norm sampler, keeping the layer's input and output gradient for the book-keeping pass."""
    from opacus.grad_sample.linear import compute_linear_norm_sample

    _keep(layer, activations[0].to(backprops.dtype), backprops, None, None)
    return compute_linear_norm_sample(layer, activations, backprops)


_KEPT = threading.local()


def _keep(layer: nn.Module, a: Tensor, g: Tensor, padding: tuple[int, int] | None, per_example: Tensor | None) -> None:
    kept = getattr(_KEPT, "layers", None)
    if kept is not None:  # a NormPass is collecting (its first pass runs in this thread)
        kept.append((layer, a, g, padding, per_example))


def _clipped_sum(
    layer: nn.Module, a: Tensor, g: Tensor, padding: tuple[int, int] | None, per_example: Tensor | None, c: Tensor
) -> None:
    """Set the layer's parameter gradients to sum_i c_i * grad_i, what the second backward pass would give, from the
    input ``a`` and per-example output gradient ``g`` the first pass saw."""
    cg = g * c.reshape(-1, *([1] * (g.dim() - 1)))
    if isinstance(layer, nn.Linear):
        if layer.weight.requires_grad:
            layer.weight.grad = torch.einsum("n...o,n...i->oi", cg, a)
        if layer.bias is not None and layer.bias.requires_grad:
            layer.bias.grad = cg.reshape(-1, cg.shape[-1]).sum(0)
        return
    assert isinstance(layer, nn.Conv2d) and padding is not None
    if layer.weight.requires_grad:
        if per_example is not None:
            layer.weight.grad = torch.einsum("n,n...->...", c, per_example)
        else:
            layer.weight.grad = conv2d_weight(
                a,
                layer.weight.shape,
                cg,
                stride=layer.stride,
                padding=padding,
                dilation=layer.dilation,
                groups=layer.groups,
            )
    if layer.bias is not None and layer.bias.requires_grad:
        layer.bias.grad = cg.sum((0, 2, 3))


class NormPass:
    """Opacus's ghost-clipping backward (``DPTensorFastGradientClipping.backward``, Opacus 1.6) with a first pass
    that computes no weight gradient.

    The first pass only has to make every trainable layer's backward hook fire with its output gradient: a layer
    whose input needs a gradient fires when that input's gradient is computed, a first layer (input without
    gradient) when its output's is. Hooks on each trainable layer record those tensors during the forward pass (its
    inputs before, its output after, the backward-hook wrapping), and the first pass asks autograd for the gradients
    of exactly these tensors, so no convolution or linear layer computes its weight gradient there (oneDNN computes a
    convolution's weight gradient even when only the bias's is asked for: the first convolution's cost 74 ms a batch
    here). The clipped gradient sums then come from what the first pass kept (book-keeping, see the module's
    docstring) when every trainable parameter belongs to a linear or convolution layer, else from Opacus's second
    pass on the loss reweighted by the clipping factors. The step taken is the same as ``loss.backward()``'s
    (tested)."""

    def __init__(self, module: nn.Module) -> None:
        self._wanted: list[Tensor] = []
        self._handles = []
        self._params = [p for p in module.parameters() if p.requires_grad]
        self.bookkept = 0  # steps whose clipped gradients came from the first pass alone
        self._calls: dict[int, int] = {}  # per layer, its calls in the current forward pass
        self._handles.append(module.register_forward_pre_hook(lambda *_: self._calls.clear()))
        for m in module.modules():
            if any(p.requires_grad for p in m.parameters(recurse=False)):
                self._handles.append(m.register_forward_pre_hook(self._count))
                self._handles.append(m.register_forward_hook(self._record, with_kwargs=True))

    def _count(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        """Ghost clipping sums one norm per layer and step: a layer called twice in one forward pass (tied weights)
        cannot be clipped so. Refused here with a ConfigError that names the fix; Opacus's own hook fails later and
        less clearly."""
        if not (torch.is_grad_enabled() and module.training):
            return
        self._calls[id(module)] = self._calls.get(id(module), 0) + 1
        if self._calls[id(module)] > 1:
            self._calls.clear()
            raise ConfigError(
                f"the model uses a layer ({type(module).__name__}) more than once in its forward pass (tied weights), "
                "which ghost clipping cannot handle; train with grad_sample_mode='hooks' (bastion harden --dp-mode "
                "hooks)"
            )

    def _record(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        if not torch.is_grad_enabled():
            return
        inputs = [t for t in (*args, *kwargs.values()) if isinstance(t, Tensor) and t.requires_grad]
        if inputs:
            self._wanted.extend(inputs)
        else:
            outputs = output if isinstance(output, (tuple, list)) else (output,)
            self._wanted.extend(t for t in outputs if isinstance(t, Tensor) and t.requires_grad)

    def backward(self, loss: Any) -> None:
        """Both passes for ``loss``, the ``DPTensorFastGradientClipping`` of the last forward pass."""
        wanted, self._wanted = self._wanted, []
        per_example = loss.loss_per_sample
        reduced = per_example.mean(0) if loss.loss_reduction == "mean" else per_example.sum(0)
        kept: list[tuple[nn.Module, Tensor, Tensor, tuple[int, int] | None, Tensor | None]] = []
        _KEPT.layers = kept
        try:
            if wanted:
                torch.autograd.grad(reduced, wanted, retain_graph=True, allow_unused=True)
            else:  # nothing recorded (no trainable layer saw a tensor needing gradients): Opacus's own first pass
                reduced.backward(retain_graph=True)
        finally:
            _KEPT.layers = None
        loss.optimizer.zero_grad()
        coefficients = loss.module.get_clipping_coef().to(per_example.device)
        covered = [p for layer, *_ in kept for p in layer.parameters(recurse=False) if p.requires_grad]
        if len(covered) == len(self._params) and {id(p) for p in covered} == {id(p) for p in self._params}:
            for layer, a, g, padding, per_example_grads in kept:  # book-keeping: no second pass
                _clipped_sum(layer, a, g, padding, per_example_grads, coefficients)
            self.bookkept += 1
            return
        loss.module.disable_hooks()
        try:
            (coefficients * per_example).sum().backward()
        finally:
            loss.module.enable_hooks()

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles, self._wanted = [], []


def install() -> None:
    """Register the sampler with Opacus's ghost-clipping module (once; Opacus keeps one registry per process). Done
    by ``private_train`` when it runs in ghost mode, never on import."""
    global _INSTALLED
    with _LOCK:
        if _INSTALLED:
            return
        from opacus.grad_sample import register_norm_sampler

        register_norm_sampler(nn.Conv2d)(conv2d_norm_sample)
        register_norm_sampler(nn.Linear)(linear_norm_sample)
        _INSTALLED = True
