"""Small PyTorch helpers: mode handling, batching, devices, generators, threads."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch
from torch import nn


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode for the block, then restore each one's previous mode exactly."""
    modes = [(m, m.training) for m in module.modules()]
    try:
        module.eval()
        yield module
    finally:
        for m, training in modes:
            m.training = training


def as_images(x: torch.Tensor) -> torch.Tensor:
    """View inputs as (N, C, H, W): (N, H, W) gains a channel, a flat feature vector becomes one row of pixels."""
    if x.dim() == 4:
        return x
    if x.dim() == 3:
        return x.unsqueeze(1)
    return x.reshape(x.shape[0], 1, 1, -1)


def batch_slices(n: int, batch_size: int) -> Iterator[slice]:
    """Consecutive slices covering ``range(n)`` in chunks of ``batch_size``."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be > 0, got {batch_size}")
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cpu")
    return torch.device(device)


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator on ``device`` seeded with ``seed`` (random draws must be made on the generator's device)."""
    g = torch.Generator(device=torch.device(device))
    g.manual_seed(int(seed))
    return g


def default_threads() -> int:
    """Threads to use: the BASTION_THREADS variable, else the number of usable cores (at most 2 here)."""
    env = os.environ.get("BASTION_THREADS")
    if env and env.isdigit() and int(env) > 0:
        return int(env)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores)


def configure_threads(n: int | None = None) -> int:
    """Set torch's intra-op threads to ``n`` (default :func:`default_threads`) and return it."""
    n = n or default_threads()
    torch.set_num_threads(n)
    return n
