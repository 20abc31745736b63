"""FGSM and PGD-20 side by side: Bastion, a plain PyTorch loop, torchattacks and IBM ART, in one process.

Fashion-MNIST reference CNN (trained once and cached under bench/.cache), the first N test images, Linf eps 0.1
(the issue's target) and 0.03 (where accuracy is mid-range, so differences between attacks would show), PGD step 0.01 with a random start. Every method's time covers crafting the examples and the final prediction on them;
each is run --repeats times, interleaved, and the median time reported. Prints a markdown table for bench/RESULTS.md.

    .venv/bin/python bench/evasion.py --threads 1
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bastion import FGSM, PGD, Norm, ThreatModel, load_dataset, load_model, save_model, train_model

CACHE = Path(__file__).resolve().parent / ".cache"


def reference_model(epochs: int) -> tuple[nn.Module, object]:
    path = CACHE / f"fmnist-cnn-e{epochs}.safetensors"
    data = load_dataset("fashion-mnist")
    if not path.is_file():
        trained = train_model(data, epochs=epochs, seed=0)
        save_model(trained.module, trained.card, path)
    loaded = load_model(path)
    return loaded.module.eval(), loaded


def plain_fgsm(model: nn.Module, x: Tensor, y: Tensor, eps: float) -> Tensor:
    xa = x.clone().requires_grad_(True)
    loss = F.cross_entropy(model(xa), y)
    (g,) = torch.autograd.grad(loss, xa)
    return (x + eps * g.sign()).clamp(0, 1).detach()


def plain_pgd(
    model: nn.Module, x: Tensor, y: Tensor, eps: float, alpha: float, steps: int, gen: torch.Generator
) -> Tensor:
    xa = (x + torch.empty_like(x).uniform_(-eps, eps, generator=gen)).clamp(0, 1)
    for _ in range(steps):
        xa.requires_grad_(True)
        loss = F.cross_entropy(model(xa), y)
        (g,) = torch.autograd.grad(loss, xa)
        xa = torch.min(torch.max(xa.detach() + alpha * g.sign(), x - eps), x + eps).clamp(0, 1)
    return xa


def robust_acc(model: nn.Module, xa: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        return float((model(xa).argmax(1) == y).float().mean())


def bench_basic(args: argparse.Namespace) -> None:
    load_before = os.getloadavg()
    module, loaded = reference_model(args.epochs)
    data = load_dataset("fashion-mnist")
    x, y = data.x_test[: args.n].contiguous(), data.y_test[: args.n].contiguous()
    clf = loaded.classifier  # type: ignore[attr-defined]
    alpha, steps = 0.01, 20

    import torchattacks
    from art.attacks.evasion import FastGradientMethod, ProjectedGradientDescent
    from art.estimators.classification import PyTorchClassifier

    art_clf = PyTorchClassifier(
        model=module,
        loss=nn.CrossEntropyLoss(),
        input_shape=(1, 28, 28),
        nb_classes=10,
        clip_values=(0.0, 1.0),
        device_type="cpu",
    )
    xn, yn = x.numpy(), y.numpy()

    def art_run(attack: object) -> float:
        xa = attack.generate(x=xn, y=yn)  # type: ignore[attr-defined]
        return float((art_clf.predict(xa, batch_size=len(xn)).argmax(1) == yn).mean())

    def seeded(i: int) -> torch.Generator:
        return torch.Generator().manual_seed(1000 + i)

    def methods(eps: float) -> dict[str, dict[str, Callable[[int], float]]]:
        ta_fgsm = torchattacks.FGSM(module, eps=eps)
        ta_pgd = torchattacks.PGD(module, eps=eps, alpha=alpha, steps=steps, random_start=True)
        art_fgsm = FastGradientMethod(art_clf, norm=np.inf, eps=eps, batch_size=len(xn))
        art_pgd = ProjectedGradientDescent(
            art_clf,
            norm=np.inf,
            eps=eps,
            eps_step=alpha,
            max_iter=steps,
            num_random_init=1,
            batch_size=len(xn),
            verbose=False,
        )
        threat = ThreatModel(Norm.LINF, eps)
        b_fgsm, b_pgd = FGSM(threat), PGD(threat, steps=steps, step_size=alpha, random_start=True)
        b_pgd_full = PGD(threat, steps=steps, step_size=alpha, random_start=True, early_stop=False)
        return {
            f"FGSM eps {eps}": {
                "plain PyTorch loop": lambda i: robust_acc(module, plain_fgsm(module, x, y, eps), y),
                "Bastion": lambda i: 1 - b_fgsm.run(clf, x, y).success_rate,
                "torchattacks 3.5.1": lambda i: robust_acc(module, ta_fgsm(x, y), y),
                "ART 1.20.1": lambda i: art_run(art_fgsm),
            },
            f"PGD-20 eps {eps}": {
                "plain PyTorch loop": lambda i: robust_acc(
                    module, plain_pgd(module, x, y, eps, alpha, steps, seeded(i)), y
                ),
                "Bastion": lambda i: 1 - b_pgd.run(clf, x, y, generator=seeded(i)).success_rate,
                "Bastion, early_stop=False": lambda i: 1 - b_pgd_full.run(clf, x, y, generator=seeded(i)).success_rate,
                "torchattacks 3.5.1": lambda i: robust_acc(module, (torch.manual_seed(1000 + i), ta_pgd(x, y))[1], y),
                "ART 1.20.1": lambda i: (np.random.seed(1000 + i), art_run(art_pgd))[1],
            },
        }

    budgets = [float(e) for e in args.eps.split(",")]
    for table in methods(budgets[0]).values():  # warm-up (allocator, first-call overheads)
        for fn in table.values():
            fn(0)

    print(f"# bench/evasion.py — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"python {sys.version.split()[0]}, torch threads {torch.get_num_threads()}, "
        f"load average before {load_before[0]:.2f}"
    )
    print(
        f"model: fmnist-cnn, {args.epochs} epochs, clean accuracy {loaded.card.clean_accuracy:.4f} "  # type: ignore[attr-defined]
        f"(test split); {args.n} test images; Linf, PGD step {alpha}, {steps} steps, random start; "
        f"median time of {args.repeats} interleaved runs\n"
    )
    for eps in budgets:
        for attack_name, table in methods(eps).items():
            times: dict[str, list[float]] = {k: [] for k in table}
            accs: dict[str, list[float]] = {k: [] for k in table}
            for i in range(args.repeats):
                for name, fn in table.items():  # interleaved so load drift hits every method alike
                    t0 = time.perf_counter()
                    accs[name].append(fn(i + 1))
                    times[name].append(time.perf_counter() - t0)
            base = statistics.median(times["plain PyTorch loop"])
            print(f"| {attack_name} | robust accuracy (mean of runs) | median seconds | time / plain loop |")
            print("|---|---|---|---|")
            for name in table:
                t = statistics.median(times[name])
                print(f"| {name} | {statistics.mean(accs[name]):.4f} | {t:.3f} | {t / base:.2f}x |")
            bastion_acc = statistics.mean(accs["Bastion"])
            anchors = [statistics.mean(accs[n]) for n in table if not n.startswith("Bastion")]
            print(
                f"\nBastion robust accuracy minus the lowest anchor: {bastion_acc - min(anchors):+.4f}; "
                f"minus the highest: {bastion_acc - max(anchors):+.4f}\n",
                flush=True,
            )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--suite",
        default="basic",
        choices=["basic", "cw", "autoattack", "square", "square-l2", "hsj", "issue3", "all"],
        help="basic: FGSM/PGD (issue 2); cw, autoattack, square (Linf and L2), square-l2 (L2 only), hsj: issue 3; "
        "issue3: cw, autoattack, square, hsj",
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n", type=int, default=1000, help="images for the basic suite")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs for the basic suite")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--eps", default="0.1,0.03", help="comma-separated Linf budgets for the basic suite")
    ap.add_argument("--scale", type=float, default=1.0, help="shrink the issue-3 image counts (for a quick try)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.suite in ("basic", "all"):
        bench_basic(args)
    if args.suite != "basic":
        from suite3 import run_issue3  # bench/suite3.py: the issue-3 comparisons

        wanted = ("cw", "autoattack", "square", "hsj") if args.suite in ("issue3", "all") else (args.suite,)
        run_issue3(args, wanted, reference_model)


if __name__ == "__main__":
    main()
