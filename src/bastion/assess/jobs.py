"""An assessment as independent jobs, so it can run on a process pool or a Ray cluster and give the same figures.

A policy splits into one job per entry, and an entry whose family can split itself (``parts`` / ``run_part`` /
``merge``: evasion, by budget and by runs of batches) into one job per part. Every job draws its randomness from
generators derived from the policy's seed and what it measures (``derived_seed``), never from what ran before or
where, so the merged result equals the one process run for the same seed, however the jobs were spread.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from bastion._progress import NullProgress
from bastion._torch import make_generator
from bastion.assess.families import FAMILIES
from bastion.assess.families.base import AssessData, AtValue, FamilyResult
from bastion.assess.policy import Policy
from bastion.models.base import Classifier


@dataclass(frozen=True)
class Job:
    """One independent piece of an assessment: an entry, or one part of it (``part``: the family's own descriptor,
    e.g. evasion's ``(eps, first batch, end batch)``)."""

    index: int
    entry: str
    family: str
    settings: Any
    part: Any = None

    def describe(self) -> str:
        return self.entry if self.part is None else f"{self.entry} {self.part}"


def splittable(family: Any) -> bool:
    return all(callable(getattr(family, m, None)) for m in ("parts", "run_part", "merge"))


def plan(policy: Policy, data: AssessData, shards: int = 1) -> list[Job]:
    """The policy's jobs, in policy order; a splittable entry gives up to ``shards`` parts per budget."""
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    jobs: list[Job] = []
    for e in policy.entries():
        family: Any = e.family
        parts = family.parts(e.settings, data, shards) if splittable(family) else [None]
        for part in parts:
            jobs.append(Job(len(jobs), e.id, e.family.name, e.settings, part))
    return jobs


def derived_seed(seed: int, entry: str, at: Mapping[str, AtValue]) -> int:
    """A seed for one (entry, row): the same whatever else the policy runs and in whichever order."""
    import hashlib

    key = f"{seed}|{entry}|" + "|".join(f"{k}={at[k]!r}" for k in sorted(at))
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little") & ((1 << 62) - 1)


def run_job(model: Classifier, data: AssessData, seed: int, job: Job) -> Any:
    """Run one job wherever it landed: a whole entry gives its FamilyResult, a part the family's part output."""
    family: Any = FAMILIES.get(job.family)
    device = getattr(model, "device", "cpu")

    def generator_for(at: Mapping[str, AtValue]) -> torch.Generator:
        return make_generator(derived_seed(seed, job.entry, at), device)

    if job.part is None:
        return family.run(
            model, data, job.settings, entry=job.entry, generator_for=generator_for, progress=NullProgress()
        )
    return family.run_part(model, data, job.settings, job.part, entry=job.entry, generator_for=generator_for)


def merge(policy: Policy, data: AssessData, jobs: list[Job], outputs: list[Any]) -> list[FamilyResult]:
    """Each entry's result from its jobs' outputs (``outputs[i]`` is job ``jobs[i]``'s), in policy order."""
    if len(outputs) != len(jobs):
        raise ValueError(f"{len(outputs)} outputs for {len(jobs)} jobs")
    results: list[FamilyResult] = []
    for e in policy.entries():
        mine = [(j, o) for j, o in zip(jobs, outputs, strict=True) if j.entry == e.id]
        if len(mine) == 1 and mine[0][0].part is None:
            results.append(mine[0][1])
        else:
            family: Any = e.family
            results.append(family.merge(data, e.settings, e.id, [o for _, o in mine]))
    return results
