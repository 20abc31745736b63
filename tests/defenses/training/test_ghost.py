"""Per-example gradient norms of convolutions for ghost clipping: each method equals the norms of per-example
gradients computed by torch.func, and DP-SGD in ghost mode with them takes the same step as Opacus's hooks mode."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from bastion.data import Dataset
from bastion.defenses.training import PrivateTraining, ghost, private_train
from bastion.errors import ConfigError
from bastion.models.torch import TorchClassifier

LAYERS = [
    dict(in_channels=1, out_channels=6, kernel_size=3, padding=1),
    dict(in_channels=3, out_channels=5, kernel_size=(4, 2), stride=2, padding=(1, 0), bias=False),
    dict(in_channels=4, out_channels=6, kernel_size=3, dilation=2, padding=2),
    dict(in_channels=4, out_channels=6, kernel_size=3, groups=2),
    dict(in_channels=2, out_channels=3, kernel_size=4, padding="same"),  # uneven: one more on the right and bottom
    dict(in_channels=2, out_channels=3, kernel_size=3, padding="valid"),
    # Opacus 1.6's per-example gradients ignore the padding mode (wrong by half the gradient's scale, measured)
    dict(in_channels=2, out_channels=3, kernel_size=3, padding=1, padding_mode="reflect"),
    dict(in_channels=2, out_channels=3, kernel_size=3, padding=(2, 1), padding_mode="circular"),
    dict(in_channels=2, out_channels=3, kernel_size=3, padding=1, padding_mode="replicate"),
]


def _reference(layer: nn.Conv2d, a: torch.Tensor, g: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-example gradient norms of each parameter from torch.func: d<conv(a_i), g_i>/dtheta for every i."""
    params = dict(layer.named_parameters())

    def inner(p: dict[str, torch.Tensor], ai: torch.Tensor, gi: torch.Tensor) -> torch.Tensor:
        out = torch.func.functional_call(layer, p, (ai.unsqueeze(0),))
        return (out * gi.unsqueeze(0)).sum()

    grads = torch.func.vmap(torch.func.grad(inner), in_dims=(None, 0, 0))(params, a, g)
    return {name: v.flatten(1).norm(dim=1) for name, v in grads.items()}


@pytest.mark.parametrize("config", LAYERS, ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items()))
def test_every_method_gives_the_per_example_gradient_norms(config: dict[str, object]) -> None:
    torch.manual_seed(0)
    layer = nn.Conv2d(**config)  # type: ignore[arg-type]
    a = torch.randn(7, layer.in_channels, 11, 9)
    g = torch.randn_like(layer(a))
    want = _reference(layer, a, g)
    got = ghost.conv2d_norm_sample(layer, [a], g)
    assert {p for p in got} == set(layer.parameters())
    for name, p in layer.named_parameters():
        torch.testing.assert_close(got[p], want[name], rtol=1e-4, atol=1e-5)
    padded, padding = ghost.padded(layer, a)
    candidates = ghost._candidates(layer, padded, g)
    for method in candidates:  # each candidate, not only the one the timing chose
        got_w, per_example = ghost._METHODS[method](layer, padded, g, padding)
        if per_example is not None:  # kept for the book-keeping pass: it must be the real per-example gradient
            torch.testing.assert_close(per_example.flatten(1).norm(dim=1), want["weight"], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(got_w, want["weight"], rtol=1e-4, atol=1e-5)
    assert ghost.choices()[ghost._signature(layer, padded)] in candidates


def test_the_gram_method_is_not_tried_where_its_matrices_would_be_huge() -> None:
    layer = nn.Conv2d(1, 8, 3, padding=1)  # 784 output positions against a 9-weight kernel
    a = torch.randn(2, 1, 28, 28)
    assert "gram" not in ghost._candidates(layer, a, layer(a))
    deep = nn.Conv2d(64, 64, 3)  # 9 positions against 576 weights per output channel
    a = torch.randn(2, 64, 5, 5)
    assert "gram" in ghost._candidates(deep, a, deep(a))


def test_an_empty_batch_gives_empty_norms() -> None:
    layer = nn.Conv2d(2, 3, 3)
    a = torch.randn(0, 2, 6, 6)
    got = ghost.conv2d_norm_sample(layer, [a], layer(a))
    assert all(v.shape == (0,) for v in got.values()) and len(got) == 2


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 4, 3, stride=2)
        self.head = nn.Linear(4 * 3 * 3, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.c1(x))
        return self.head(torch.tanh(self.c2(h)).flatten(1))


def _one_step(
    mode: str,
    x: torch.Tensor,
    y: torch.Tensor,
    net_type: type[nn.Module] = _Net,
    *,
    norm_pass: bool = True,
    weight_grads: list[str] | None = None,
    bookkept: list[int] | None = None,
) -> list[torch.Tensor]:
    """The change of every parameter by one DP-SGD step without noise in Opacus's ``mode`` (ghost: with Bastion's
    norm pass unless ``norm_pass`` is False); each weight gradient computed is logged into ``weight_grads``."""
    from opacus import PrivacyEngine
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    net = net_type()
    before = [p.detach().clone() for p in net.parameters()]
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    loader = DataLoader(TensorDataset(x, y), batch_size=len(x))
    made = PrivacyEngine().make_private(
        module=net,
        optimizer=opt,
        data_loader=loader,
        noise_multiplier=0.0,
        max_grad_norm=0.05,  # small enough that every example is clipped
        grad_sample_mode=mode,
        criterion=nn.CrossEntropyLoss(),
        poisson_sampling=False,
    )
    model, opt = made[0], made[1]
    criterion = made[2] if mode == "ghost" else nn.CrossEntropyLoss()
    passes = ghost.NormPass(net) if mode == "ghost" and norm_pass else None
    if weight_grads is not None:
        for name, p in net.named_parameters():
            if name.endswith("weight"):
                p.register_hook(lambda g, name=name: weight_grads.append(name))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opt.zero_grad()
        loss = criterion(model(x), y)
        if passes is None:
            loss.backward()
        else:
            passes.backward(loss)
        opt.step()
    if bookkept is not None:
        bookkept.append(passes.bookkept if passes is not None else 0)
    return [p.detach() - b for p, b in zip(net.parameters(), before, strict=True)]  # the step taken


def test_a_ghost_step_with_these_norms_and_the_norm_pass_equals_opacus_hooks_step() -> None:
    ghost.install()
    torch.manual_seed(1)
    x, y = torch.rand(32, 1, 8, 8), torch.randint(0, 10, (32,))
    by_hooks = _one_step("hooks", x, y)
    bookkept: list[int] = []
    for _ in range(2):  # the first step also times the norm methods
        for fast in (_one_step("ghost", x, y, bookkept=bookkept), _one_step("ghost", x, y, norm_pass=False)):
            for h, g in zip(by_hooks, fast, strict=True):
                assert h.abs().max() > 0  # the step moved every parameter
                torch.testing.assert_close(g, h, rtol=1e-4, atol=1e-8)
    assert bookkept == [1, 1]  # every layer kept its inputs: no second backward pass


def test_the_norm_pass_computes_no_weight_gradient() -> None:
    """Opacus's own ghost backward computes every weight gradient twice; with the norm pass and book-keeping autograd
    computes none (the clipped sums come from what the first pass kept)."""
    ghost.install()
    x, y = torch.rand(16, 1, 8, 8), torch.randint(0, 10, (16,))
    opacus_pass: list[str] = []
    _one_step("ghost", x, y, norm_pass=False, weight_grads=opacus_pass)
    ours: list[str] = []
    _one_step("ghost", x, y, weight_grads=ours)
    assert sorted(opacus_pass) == sorted(["c1.weight", "c2.weight", "head.weight"] * 2)
    assert ours == []


class _WithGroupNorm(nn.Module):
    """A layer the book-keeping pass does not cover (GroupNorm's affine terms): Opacus's second pass must run."""

    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv2d(1, 4, 3, padding=1)
        self.gn = nn.GroupNorm(2, 4)
        self.head = nn.Linear(4 * 64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.gn(self.c(x))).flatten(1))


def test_an_uncovered_layer_falls_back_to_the_second_pass() -> None:
    ghost.install()
    torch.manual_seed(2)
    x, y = torch.rand(32, 1, 8, 8), torch.randint(0, 10, (32,))
    bookkept: list[int] = []
    by_functorch = _one_step("functorch", x, y, _WithGroupNorm)
    ours = _one_step("ghost", x, y, _WithGroupNorm, bookkept=bookkept)
    assert bookkept == [0]
    for f, g in zip(by_functorch, ours, strict=True):
        assert f.abs().max() > 0
        torch.testing.assert_close(g, f, rtol=1e-4, atol=1e-8)


class _Tied(nn.Module):
    """Uses one convolution twice: ghost clipping cannot sum two uses' norms."""

    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv2d(1, 1, 3, padding=1)
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.c(torch.tanh(self.c(x))).flatten(1))


def test_a_layer_used_twice_is_refused_in_ghost_mode_and_trains_in_hooks_mode(digits: Dataset) -> None:
    spec = digits.spec
    x, y = digits.x_train[:400], digits.y_train[:400]
    with pytest.raises(ConfigError, match=r"more than once.*hooks"):
        private_train(TorchClassifier(_Tied(), spec), x, y, PrivateTraining(epochs=1, delta=1e-3))
    res = private_train(
        TorchClassifier(_Tied(), spec), x, y, PrivateTraining(epochs=1, delta=1e-3, grad_sample_mode="hooks")
    )
    assert res.steps > 0


class _Reflect(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv2d(1, 3, 3, padding=1, padding_mode="reflect")
        self.head = nn.Linear(3 * 64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.c(x)).flatten(1))


def test_reflect_padding_is_clipped_by_its_true_norms_in_ghost_mode(digits: Dataset) -> None:
    """Opacus's own per-example gradients ignore the padding mode; with them ghost clipping would scale the true
    gradients by wrong norms. Bastion's ghost step equals functorch's (true per-example gradients), and hooks mode,
    which would train on the wrong ones, is refused."""
    ghost.install()
    x, y = digits.x_train[:64], digits.y_train[:64]
    clf = TorchClassifier(_Reflect(), digits.spec)
    with pytest.raises(
        ConfigError, match=r"pad with anything but zeros.*c \(Conv2d, padding_mode=reflect\).*functorch"
    ):
        private_train(clf, x, y, PrivateTraining(epochs=1, delta=1e-3, batch_size=32, grad_sample_mode="hooks"))
    steps = {mode: _one_step(mode, x, y, _Reflect) for mode in ("functorch", "ghost")}
    for f, g in zip(steps["functorch"], steps["ghost"], strict=True):
        torch.testing.assert_close(g, f, rtol=1e-4, atol=1e-8)


def test_no_hook_outlives_training_even_when_interrupted(
    digits: Dataset, interrupt_after: Callable[[int], Any]
) -> None:
    x, y = digits.x_train[:400], digits.y_train[:400]

    def hooks(module: nn.Module) -> int:
        return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in module.modules())

    clf = TorchClassifier(_Net(), digits.spec)
    with pytest.raises(KeyboardInterrupt):
        private_train(clf, x, y, PrivateTraining(epochs=2, delta=1e-3, batch_size=64), progress=interrupt_after(2))
    assert hooks(clf.module) == 0
    res = private_train(clf, x, y, PrivateTraining(epochs=1, delta=1e-3, batch_size=64))
    assert hooks(res.classifier.module) == 0


def test_a_forward_pass_without_backward_leaves_no_count_behind(digits: Dataset) -> None:
    """The tied-layer check counts calls per forward pass: a pass that never reached backward (an error between
    them) must not make the next, ordinary pass look like a second use of every layer."""
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Flatten(), nn.Linear(128, 10)).train()
    norm_pass = ghost.NormPass(net)
    x = digits.x_train[:4]
    try:
        net(x)
        net(x)  # no backward in between: still one use of each layer per pass, so no ConfigError
    finally:
        norm_pass.remove()
    tied = _Tied().train()
    tied_pass = ghost.NormPass(tied)
    try:
        with pytest.raises(ConfigError, match="more than once"):
            tied(x)  # a real second use within one pass is still refused
    finally:
        tied_pass.remove()
