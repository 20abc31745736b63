"""An assessment split into jobs gives the same figures however it is split: each batch of each budget draws from
its own seeded generator, and entries that cannot split run whole."""

from __future__ import annotations

import itertools
import json

import torch

from bastion.assess import parse_policy, run_assessment
from bastion.assess.executors import InProcess
from bastion.assess.families.base import AssessData
from bastion.assess.jobs import plan
from bastion.data import Dataset
from bastion.models.base import predict_labels
from bastion.models.zoo import TrainedModel

POLICY = {
    "samples": 60,
    "batch_size": 20,
    "seed": 5,
    "attacks": [
        {"id": "fgsm", "attack": "fgsm", "eps": [0.05, 0.1]},
        {"id": "square", "attack": "square", "eps": [0.1], "params": {"max_queries": 50}},
    ],
    "probes": [{"family": "corruption", "params": {"severities": [1, 5]}}],
}


def _figures(a) -> tuple[dict[str, object], list[tuple[object, ...]]]:  # type: ignore[no-untyped-def]
    rows = {f"{r.entry} {json.dumps(r.at, sort_keys=True)}": r.metrics for r in a.rows}
    examples = [(e.attack, e.eps, e.index, e.adv_pred, e.x_adv.tolist()) for e in a.examples]
    return rows, examples


def test_split_runs_give_the_figures_of_one_run(digits_model: TrainedModel, digits: Dataset) -> None:
    policy = parse_policy(POLICY)
    m = digits_model.classifier
    whole = run_assessment(m, digits.x_test, digits.y_test, policy)
    for shards in (1, 3):
        split = run_assessment(m, digits.x_test, digits.y_test, policy, executor=InProcess(shards=shards))
        assert _figures(split) == _figures(whole)
        assert [o.budgets[0].n_attacked for o in split.outcomes] == [o.budgets[0].n_attacked for o in whole.outcomes]
        assert split.extra["distributed"]["shards"] == shards
    assert {r.entry for r in whole.rows} == {"fgsm", "square", "corruption"} and whole.examples


def test_a_budget_splits_at_batch_boundaries_and_other_families_run_whole(
    digits_model: TrainedModel, digits: Dataset
) -> None:
    policy = parse_policy(POLICY)
    x, y = digits.x_test[:60], digits.y_test[:60]
    pred = predict_labels(digits_model.classifier, x)
    data = AssessData(x, y, torch.arange(60), pred, 20, 0.95)
    n_batches = -(-int((pred == y).sum()) // 20)
    jobs = plan(policy, data, shards=3)
    fgsm = [j.part for j in jobs if j.entry == "fgsm"]
    assert len(fgsm) == 2 * min(3, n_batches)
    for eps in (0.05, 0.1):  # each budget's parts cover its batches once, in order
        ranges = sorted((lo, hi) for e, lo, hi in fgsm if e == eps)
        assert ranges[0][0] == 0 and ranges[-1][1] == n_batches
        assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
    assert [j.part for j in jobs if j.family == "corruption"] == [None]
    assert [j.index for j in jobs] == list(range(len(jobs)))
    assert len(plan(policy, data, shards=1)) == 2 + 1 + 1
