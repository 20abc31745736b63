"""Reference models for calibrated membership inference: many copies of the target's recipe, trained at once.

LiRA and RMIA compare the target's answer on a point with the answers of models trained the same way with and
without that point. Those reference models are the attack's whole cost, so they are trained together: the
parameters of ``group`` models are stacked and one ``torch.func.vmap``-ed forward pass serves all of them, each on
its own minibatch of its own training set, with Adam applied to the stacked tensors (Adam is element-wise, so this
is exactly ``group`` independent optimisers). On the Fashion-MNIST MLP of the privacy benchmark this trains 64
models in the time of a handful trained one by one (bench/privacy.py prints both).

Which pool points train which model is a balanced ``keep`` mask: models come in pairs, one trained on a random half
of the pool and its partner on the other half, so every point is a member of exactly half of the models (as LiRA's
online attack wants) and every model sees the same number of points.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from bastion._progress import NullProgress, Progress
from bastion._torch import batch_slices, make_generator
from bastion.errors import ConfigError
from bastion.models.zoo.nets import build
from bastion.models.zoo.recipe import Recipe
from bastion.types import ModelSpec


def balanced_keep(models: int, pool: int, generator: torch.Generator) -> Tensor:
    """A (models, pool) membership mask: pairs of models split the pool into complementary random halves, so each
    point trains exactly half of the models and each model trains on ``pool // 2`` points (an odd pool's last
    point, in random order, trains none)."""
    if models < 2 or models % 2:
        raise ConfigError(f"reference models come in pairs: need an even number >= 2, got {models}")
    if pool < 4:
        raise ConfigError(f"the reference pool needs at least 4 points, got {pool}")
    half = pool // 2
    keep = torch.zeros(models, pool, dtype=torch.bool)
    for pair in range(models // 2):
        perm = torch.randperm(pool, generator=generator)
        keep[2 * pair, perm[:half]] = True
        keep[2 * pair + 1, perm[half : 2 * half]] = True
    return keep


@dataclass
class ReferenceModels:
    """``K`` trained reference models (their stacked parameters), the pool mask they were trained on and their cost."""

    recipe: Recipe
    spec: ModelSpec
    keep: Tensor  # (K, pool) bool
    params: dict[str, Tensor]  # each (K, ...)
    buffers: dict[str, Tensor]
    seconds: float
    threads: int
    _base: nn.Module | None = field(default=None, repr=False)

    @property
    def count(self) -> int:
        return int(self.keep.shape[0])

    def _module(self) -> nn.Module:
        if self._base is None:
            self._base = build(
                self.recipe.architecture, self.spec.input_shape, self.spec.num_classes, self.recipe.arch_params
            ).to("meta")
        return self._base

    def logits(self, x: Tensor, *, batch_size: int = 1024, group: int = 16) -> Tensor:
        """(K, N, classes) logits of every reference model on ``x``."""
        base = self._module()

        def one(p: dict[str, Tensor], b: dict[str, Tensor], xx: Tensor) -> Tensor:
            return functional_call(base, (p, b), (xx,))

        out = torch.empty(self.count, x.shape[0], self.spec.num_classes)
        with torch.no_grad():
            for g in batch_slices(self.count, group):
                p = {k: v[g] for k, v in self.params.items()}
                b = {k: v[g] for k, v in self.buffers.items()}
                for s in batch_slices(x.shape[0], batch_size):
                    out[g, s] = vmap(one, in_dims=(0, 0, None))(p, b, x[s])
        return out

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {f"p.{k}": v.contiguous() for k, v in self.params.items()}
        tensors |= {f"b.{k}": v.contiguous() for k, v in self.buffers.items()}
        tensors["keep"] = self.keep.to(torch.uint8)
        meta = {
            "recipe": json.dumps(self.recipe.to_dict()),
            "spec": json.dumps(self.spec.to_dict()),
            "seconds": str(self.seconds),
            "threads": str(self.threads),
        }
        save_file(tensors, str(path), metadata=meta)

    @classmethod
    def load(cls, path: Path) -> ReferenceModels:
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = f.metadata()
        t = load_file(str(path))
        return cls(
            recipe=Recipe(**json.loads(meta["recipe"])),
            spec=ModelSpec.from_dict(json.loads(meta["spec"])),
            keep=t.pop("keep").bool(),
            params={k[2:]: v for k, v in t.items() if k.startswith("p.")},
            buffers={k[2:]: v for k, v in t.items() if k.startswith("b.")},
            seconds=float(meta["seconds"]),
            threads=int(meta["threads"]),
        )


def train_references(
    recipe: Recipe,
    spec: ModelSpec,
    x: Tensor,
    y: Tensor,
    keep: Tensor,
    *,
    seed: int = 0,
    group: int = 16,
    progress: Progress | None = None,
) -> ReferenceModels:
    """Train one model of ``recipe`` per row of ``keep`` (a (K, pool) mask over ``x``/``y``, equal row sums), in
    vmapped groups of ``group``. Model ``k`` starts from the zoo's initialisation under seed ``seed + k`` and draws
    its batch order from its own generator, so a model does not depend on the group it was trained in."""
    sizes = keep.sum(1)
    if keep.dim() != 2 or keep.shape[1] != x.shape[0] or bool((sizes != sizes[0]).any()) or int(sizes[0]) < 1:
        raise ConfigError("keep must be a (models, pool) mask with the same positive number of points per model")
    progress = progress or NullProgress()
    n = int(sizes[0])
    k_total = int(keep.shape[0])
    steps = math.ceil(n / recipe.batch_size) * recipe.epochs
    progress.task(f"training {k_total} reference models ({recipe.architecture})", k_total * steps)
    start = time.perf_counter()
    params: dict[str, list[Tensor]] = {}
    buffers: dict[str, list[Tensor]] = {}
    for g in batch_slices(k_total, group):
        p, b = _train_group(recipe, spec, x, y, keep[g], range(g.start, g.stop), seed, progress)
        for k, v in p.items():
            params.setdefault(k, []).append(v)
        for k, v in b.items():
            buffers.setdefault(k, []).append(v)
    return ReferenceModels(
        recipe=recipe,
        spec=spec,
        keep=keep.clone(),
        params={k: torch.cat(v) for k, v in params.items()},
        buffers={k: torch.cat(v) for k, v in buffers.items()},
        seconds=time.perf_counter() - start,
        threads=torch.get_num_threads(),
    )


def _init(recipe: Recipe, spec: ModelSpec, seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build(recipe.architecture, spec.input_shape, spec.num_classes, recipe.arch_params)


def _train_group(
    recipe: Recipe,
    spec: ModelSpec,
    x: Tensor,
    y: Tensor,
    keep: Tensor,
    ids: range,
    seed: int,
    progress: Progress,
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    models = [_init(recipe, spec, seed + i) for i in ids]
    params, buffers = stack_module_state(models)
    params = {k: v.detach().requires_grad_(True) for k, v in params.items()}
    base = copy.deepcopy(models[0]).to("meta")
    base.train()

    def one(p: dict[str, Tensor], b: dict[str, Tensor], xx: Tensor) -> Tensor:
        return functional_call(base, (p, b), (xx,))

    forward = vmap(one, in_dims=(0, 0, 0), randomness="different")
    opt = torch.optim.Adam(list(params.values()), lr=recipe.lr, weight_decay=recipe.weight_decay)
    members = torch.stack([row.nonzero().squeeze(1) for row in keep])  # (g, n) pool indices of each model
    gens = [make_generator(seed + i) for i in ids]
    g, n = members.shape
    for _ in range(recipe.epochs):
        order = torch.stack([members[j, torch.randperm(n, generator=gens[j])] for j in range(g)])
        for s in batch_slices(n, recipe.batch_size):
            idx = order[:, s]  # (g, B)
            out = forward(params, buffers, x[idx])  # (g, B, classes)
            loss = F.cross_entropy(out.flatten(0, 1), y[idx].flatten(), reduction="sum") / idx.shape[1]
            opt.zero_grad(set_to_none=True)
            loss.backward()  # the sum over models: each model's gradient is that of its own mean loss
            opt.step()
            progress.advance(g)
    return {k: v.detach() for k, v in params.items()}, {k: v.detach() for k, v in buffers.items()}
