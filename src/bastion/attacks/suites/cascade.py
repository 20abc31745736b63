"""Worst case over several attacks, per input: each attack only sees the inputs the previous ones failed on."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from bastion.attacks.base import Attack
from bastion.errors import ArtifactError, ConfigError
from bastion.models.base import Classifier, model_digest


@dataclass(frozen=True)
class CascadeResult:
    """Per input: the adversarial example of the first attack that broke it (else the input itself).

    ``broken_by[i]`` is the index of that attack in ``names`` (-1: unbroken); ``contributions`` how many inputs each
    attack broke; ``queries`` the model evaluations spent on each input over all attacks that ran on it.
    """

    x_adv: Tensor
    success: Tensor
    queries: Tensor
    broken_by: Tensor
    names: tuple[str, ...]
    contributions: dict[str, int]
    seconds: dict[str, float]
    resumed_from: int = 0

    @property
    def success_rate(self) -> float:
        return int(self.success.sum()) / max(1, self.success.numel())


def _fingerprint(x: Tensor, y: Tensor, names: Sequence[str], attacks: Sequence[Attack], model: Classifier) -> str:
    """What a checkpoint belongs to: the inputs, every attack's threat model and settings, and the model's digest.

    A checkpoint made under another eps, other attack settings or for another model is never resumed."""
    h = hashlib.sha256()
    h.update(x.detach().cpu().contiguous().numpy().tobytes())
    h.update(y.detach().cpu().contiguous().numpy().tobytes())
    h.update("|".join(names).encode())
    for a in attacks:
        params = a.params() if hasattr(a, "params") else {}
        h.update(json.dumps({"threat": a.threat.to_dict(), "params": params}, sort_keys=True, default=str).encode())
    h.update(model_digest(model).encode())
    return h.hexdigest()


@dataclass(frozen=True)
class Cascade:
    """Runs ``attacks`` in order; each one attacks only the inputs no earlier attack has broken.

    This is how AutoAttack-style evaluations get the worst case over diverse attacks at the cost of roughly one
    strong attack: cheap attacks first, expensive ones only on the survivors. With ``checkpoint=`` the state is
    saved after every attack and a rerun with the same inputs resumes after the last finished attack.

    Example::

        Cascade((APGD(threat), APGDT(threat), Square(threat))).run(clf, x, y, generator=g)
    """

    attacks: tuple[Attack, ...]
    names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.attacks, tuple) or not self.attacks:
            raise ConfigError("a cascade needs a non-empty tuple of configured attacks")
        for a in self.attacks:
            if not hasattr(a, "run") or not hasattr(a, "threat"):
                raise ConfigError(f"cascade members must be attacks, got {type(a).__name__}")
            if a.threat.targeted:
                raise ConfigError("cascade members must be untargeted: the cascade judges success as misclassification")
        names = self.names or tuple(a.name for a in self.attacks)
        if len(names) != len(self.attacks) or len(set(names)) != len(names):
            names = tuple(f"{i}:{a.name}" for i, a in enumerate(self.attacks))
        object.__setattr__(self, "names", names)

    def run(
        self,
        model: Classifier,
        x: Tensor,
        y: Tensor,
        *,
        generator: torch.Generator | None = None,
        checkpoint: str | Path | None = None,
    ) -> CascadeResult:
        n = int(x.shape[0])
        x_adv = x.detach().clone()
        success = torch.zeros(n, dtype=torch.bool)
        queries = torch.zeros(n, dtype=torch.long)
        broken_by = torch.full((n,), -1, dtype=torch.long)
        seconds: dict[str, float] = {}
        start_at = 0
        fingerprint = _fingerprint(x, y, self.names, self.attacks, model)
        ckpt = Path(checkpoint) if checkpoint is not None else None
        if ckpt is not None and ckpt.with_suffix(".json").is_file():
            start_at, seconds = self._load(ckpt, fingerprint, x_adv, success, queries, broken_by)
        for i in range(start_at, len(self.attacks)):
            todo = (~success).nonzero().squeeze(1)
            if todo.numel():
                t0 = time.perf_counter()
                r = self.attacks[i].run(model, x[todo], y[todo], generator=generator)
                seconds[self.names[i]] = time.perf_counter() - t0
                queries[todo] += r.queries
                won = todo[r.success]
                x_adv[won] = r.x_adv[r.success].to(x_adv.device)
                success[won] = True
                broken_by[won] = i
            else:
                seconds[self.names[i]] = 0.0
            if ckpt is not None:
                self._save(ckpt, fingerprint, i + 1, seconds, x_adv, success, queries, broken_by)
        contributions = {nm: int((broken_by == i).sum()) for i, nm in enumerate(self.names)}
        return CascadeResult(
            x_adv=x_adv,
            success=success,
            queries=queries,
            broken_by=broken_by,
            names=self.names,
            contributions=contributions,
            seconds=seconds,
            resumed_from=start_at,
        )

    def _save(
        self,
        path: Path,
        fingerprint: str,
        done: int,
        seconds: dict[str, float],
        x_adv: Tensor,
        success: Tensor,
        queries: Tensor,
        broken_by: Tensor,
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        save_file(
            {
                "x_adv": x_adv.cpu().contiguous(),
                "success": success.to(torch.uint8),
                "queries": queries,
                "broken_by": broken_by,
            },
            str(tmp),
        )
        tmp.replace(path)
        meta = {"fingerprint": fingerprint, "completed": done, "names": list(self.names), "seconds": seconds}
        path.with_suffix(".json").write_text(json.dumps(meta))

    def _load(
        self, path: Path, fingerprint: str, x_adv: Tensor, success: Tensor, queries: Tensor, broken_by: Tensor
    ) -> tuple[int, dict[str, float]]:
        try:
            meta = json.loads(path.with_suffix(".json").read_text())
            state = load_file(str(path))
        except (OSError, ValueError) as e:
            raise ArtifactError(f"cannot resume from checkpoint {path}: {e}; delete it to start over") from None
        if meta.get("fingerprint") != fingerprint:
            raise ArtifactError(
                f"checkpoint {path} belongs to other inputs, attack settings, budgets or another model; delete it "
                "or choose another path to start over"
            )
        x_adv.copy_(state["x_adv"])
        success.copy_(state["success"].bool())
        queries.copy_(state["queries"])
        broken_by.copy_(state["broken_by"])
        return int(meta["completed"]), {k: float(v) for k, v in meta.get("seconds", {}).items()}
