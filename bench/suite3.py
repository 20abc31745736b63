"""Issue-3 comparisons, run from bench/evasion.py: C&W, the AutoAttack cascade, Square and HopSkipJump.

Each section runs Bastion and the anchors (torchattacks 3.5.1, IBM ART 1.20.1) on the same images of the
Fashion-MNIST reference CNN, in one process, and prints a markdown table plus the issue's target and the verdict.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from bastion import Norm, ThreatModel, load_dataset
from bastion.attacks import AutoAttack, CarliniWagnerL2, HopSkipJump, Square


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _pred(module: nn.Module, x: Tensor) -> Tensor:
    with torch.no_grad():
        return module(x).argmax(1)


def _l2(a: Tensor, b: Tensor) -> Tensor:
    return (a - b).flatten(1).norm(dim=1)


def _header(title: str, args: argparse.Namespace, clean: float) -> None:
    print(f"\n## {title} — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, python "
        f"{sys.version.split()[0]}, torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.2f}; "
        f"fmnist-cnn ({args.epochs} epochs), clean accuracy {clean:.4f}\n",
        flush=True,
    )


def run_issue3(args: argparse.Namespace, wanted: tuple[str, ...], reference_model: Callable[..., Any]) -> None:
    import torchattacks
    from art.attacks.evasion import CarliniL2Method, SquareAttack
    from art.attacks.evasion import HopSkipJump as ArtHSJ
    from art.estimators.classification import PyTorchClassifier

    module, loaded = reference_model(args.epochs)
    clf = loaded.classifier
    data = load_dataset("fashion-mnist")
    clean = float(loaded.card.clean_accuracy)

    class CountingART(PyTorchClassifier):  # counts every input ART sends to the model
        queries = 0

        def predict(self, x: np.ndarray, batch_size: int = 128, **kw: Any) -> np.ndarray:
            type(self).queries += len(x)
            return super().predict(x.astype(np.float32), batch_size=batch_size, **kw)

    def art(batch: int) -> CountingART:
        return CountingART(
            model=module,
            loss=nn.CrossEntropyLoss(),
            input_shape=(1, 28, 28),
            nb_classes=10,
            clip_values=(0.0, 1.0),
            device_type="cpu",
        )

    def take(n: int) -> tuple[Tensor, Tensor]:
        k = max(10, int(n * args.scale))
        return data.x_test[:k].contiguous(), data.y_test[:k].contiguous()

    if "cw" in wanted:
        x, y = take(200)
        _header(f"C&W L2, {len(x)} images, 5 binary-search steps x 100 iterations", args, clean)
        ours, t_ours = _timed(
            lambda: CarliniWagnerL2(ThreatModel(Norm.L2, 100.0), steps=100, binary_search_steps=5).run(clf, x, y)
        )
        ta, t_ta = _timed(lambda: torchattacks.CW(module, c=1, kappa=0, steps=500, lr=0.01)(x, y))
        est = art(len(x))
        cw_art = CarliniL2Method(
            est,
            confidence=0.0,
            learning_rate=0.01,
            binary_search_steps=5,
            max_iter=100,
            initial_const=0.01,
            batch_size=len(x),
            verbose=False,
        )
        xa_art, t_art = _timed(lambda: torch.from_numpy(cw_art.generate(x=x.numpy(), y=y.numpy())))
        runs = (
            ("Bastion cw", ours.x_adv, t_ours),
            ("torchattacks CW (500 steps, c=1)", ta, t_ta),
            ("ART CarliniL2Method", xa_art, t_art),
        )
        succ = {name: _pred(module, xa) != y for name, xa, _ in runs}
        both = succ["Bastion cw"] & succ["ART CarliniL2Method"]
        print(
            "| attack | success rate | mean L2 of successes | median L2 | mean L2 where Bastion and ART both succeed | "
            "seconds |"
        )
        print("|---|---|---|---|---|---|")
        stats = {}
        for name, xa, t in runs:
            norms = _l2(xa, x)
            ok = succ[name]
            common = float(norms[both].mean()) if both.any() else float("nan")
            stats[name] = (float(ok.float().mean()), common, t)
            print(
                f"| {name} | {float(ok.float().mean()):.4f} | {float(norms[ok].mean()):.4f} | "
                f"{float(norms[ok].median()):.4f} | {common:.4f} | {t:.2f} |"
            )
        b, a_art, t_anchor = (
            stats["Bastion cw"],
            stats["ART CarliniL2Method"],
            stats["torchattacks CW (500 steps, c=1)"],
        )
        # "mean L2 at >= ART's success rate": Bastion's k smallest perturbations, k = the inputs ART broke
        k = int(succ["ART CarliniL2Method"].sum())
        ours_norms = _l2(ours.x_adv, x)[succ["Bastion cw"]].sort().values
        ours_best_k = float(ours_norms[:k].mean()) if k else float("nan")
        art_mean = float(_l2(xa_art, x)[succ["ART CarliniL2Method"]].mean()) if k else float("nan")
        print(
            f"\nat ART's success rate ({k} inputs): Bastion's {k} smallest perturbations have mean L2 "
            f"{ours_best_k:.4f}, ART's {art_mean:.4f}"
        )
        ok_rate = b[0] >= a_art[0] and ours_best_k <= art_mean and b[2] <= t_anchor[2]
        ok_common = b[0] >= a_art[0] and b[1] <= a_art[1] and b[2] <= t_anchor[2]
        print(
            f"target: mean L2 <= ART's at >= its success rate, time <= torchattacks' -> "
            f"{'MET' if ok_rate else 'NOT MET'}; stricter, on the {int(both.sum())} inputs both broke -> "
            f"{'MET' if ok_common else 'NOT MET'}",
            flush=True,
        )

    if "autoattack" in wanted:
        x, y = take(500)
        for eps in (0.1, 0.03):
            _header(f"AutoAttack cascade, {len(x)} images, Linf eps {eps}", args, clean)
            g = torch.Generator().manual_seed(0)
            ours, t_ours = _timed(lambda: AutoAttack(ThreatModel(Norm.LINF, eps)).run(clf, x, y, generator=g))
            ta_aa, t_ta_aa = _timed(
                lambda: torchattacks.AutoAttack(module, norm="Linf", eps=eps, version="standard", n_classes=10, seed=0)(
                    x, y
                )
            )
            ta_apgd, t_ta_apgd = _timed(
                lambda: torchattacks.APGD(module, norm="Linf", eps=eps, steps=100, loss="ce", seed=0)(x, y)
            )
            rows = [
                (
                    "Bastion autoattack (APGD-CE, APGD-T, Square 5000)",
                    float((_pred(module, ours.x_adv) == y).float().mean()),
                    t_ours,
                ),
                ("torchattacks AutoAttack standard", float((_pred(module, ta_aa) == y).float().mean()), t_ta_aa),
                ("torchattacks APGD-CE 100 steps", float((_pred(module, ta_apgd) == y).float().mean()), t_ta_apgd),
            ]
            print("| attack | robust accuracy | seconds |")
            print("|---|---|---|")
            for r in rows:
                print(f"| {r[0]} | {r[1]:.4f} | {r[2]:.2f} |")
            print(f"\nBastion contributions: {ours.details['contributions']}")
            ok = rows[0][1] <= min(rows[1][1], rows[2][1]) and rows[0][2] <= rows[1][2]
            print(
                f"target: robust accuracy <= the lowest anchor, time <= torchattacks AutoAttack -> "
                f"{'MET' if ok else 'NOT MET'}",
                flush=True,
            )

    square_runs = [(Norm.LINF, 0.1), (Norm.LINF, 0.03)] if "square" in wanted else []
    if "square" in wanted or "square-l2" in wanted:
        square_runs += [(Norm.L2, 1.0), (Norm.L2, 2.0)]
    for norm, eps in square_runs:
        x, y = take(200)
        label = "Linf" if norm is Norm.LINF else "L2"
        _header(f"Square {label}, 1000-query budget, {len(x)} images, eps {eps}", args, clean)
        g = torch.Generator().manual_seed(0)
        ours, t_ours = _timed(lambda: Square(ThreatModel(norm, eps), max_queries=1000).run(clf, x, y, generator=g))
        ta, t_ta = _timed(
            lambda: torchattacks.Square(module, norm=label, eps=eps, n_queries=1000, p_init=0.8, seed=0)(x, y)
        )
        est = art(len(x))
        sq_art = SquareAttack(
            est,
            norm=np.inf if norm is Norm.LINF else 2,
            eps=eps,
            max_iter=1000,
            p_init=0.8,
            batch_size=len(x),
            verbose=False,
        )
        xa_art, t_art = _timed(lambda: torch.from_numpy(sq_art.generate(x=x.numpy(), y=y.numpy())))
        rows = [
            ("Bastion square", float((_pred(module, ours.x_adv) != y).float().mean()), t_ours),
            ("torchattacks Square", float((_pred(module, ta) != y).float().mean()), t_ta),
            ("ART SquareAttack", float((_pred(module, xa_art) != y).float().mean()), t_art),
        ]
        print("| attack | success rate (incl. clean errors) | seconds |")
        print("|---|---|---|")
        for r in rows:
            print(f"| {r[0]} | {r[1]:.4f} | {r[2]:.2f} |")
        print(f"\nBastion mean queries per image {float(ours.queries.float().mean()):.1f}")
        ok = rows[0][1] >= max(rows[1][1], rows[2][1]) and rows[0][2] <= rows[1][2]
        print(f"target: success >= both anchors, time <= torchattacks' -> {'MET' if ok else 'NOT MET'}", flush=True)

    if "hsj" in wanted:
        x, y = take(50)
        eps = 0.1
        _header(f"HopSkipJump Linf, {len(x)} images, fraction within Linf {eps}", args, clean)
        est = art(len(x))
        CountingART.queries = 0
        hsj_art = ArtHSJ(
            est, batch_size=64, norm=np.inf, max_iter=10, max_eval=1000, init_eval=100, init_size=100, verbose=False
        )
        xa_art, t_art = _timed(lambda: torch.from_numpy(hsj_art.generate(x=x.numpy(), y=y.numpy())))
        budget = CountingART.queries // len(x)
        within_art = float(
            ((_pred(module, xa_art) != y) & ((xa_art - x).flatten(1).abs().amax(1) <= eps + 1e-6)).float().mean()
        )
        g = torch.Generator().manual_seed(0)
        ours, t_ours = _timed(
            lambda: HopSkipJump(ThreatModel(Norm.LINF, eps), max_queries=budget, init_evals=100, max_evals=1000).run(
                clf, x, y, generator=g
            )
        )
        within_ours = float(ours.success.float().mean())
        print("| attack | queries per image | fraction within Linf 0.1 | seconds |")
        print("|---|---|---|---|")
        print(
            f"| ART HopSkipJump (10 iterations, max_eval 1000) | {budget} (measured) | {within_art:.4f} | {t_art:.2f} |"
        )
        print(
            f"| Bastion hopskipjump (same query budget) | {float(ours.queries.float().mean()):.0f} (mean), "
            f"{int(ours.queries.max())} (max) | {within_ours:.4f} | {t_ours:.2f} |"
        )
        ok = within_ours >= within_art and t_ours <= 0.5 * t_art
        print(
            f"\ntarget: fraction >= ART's at the same budget, time <= half of ART's -> {'MET' if ok else 'NOT MET'}",
            flush=True,
        )
