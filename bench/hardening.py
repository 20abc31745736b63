"""Hardening benchmark (issue 10): adversarial training and DP-SGD on Fashion-MNIST, side by side in one run.

    python bench/hardening.py --part art|fast|dp|all [--epochs N] [--n-train N] [--n-eval N] [--threads 2]

art:  Bastion's PGD-AT against IBM ART's AdversarialTrainerMadryPGD with the same fresh reference CNN (same seed), the
      same data, epochs, batch size and PGD steps at Linf 0.1; both judged by Bastion's AutoAttack (standard preset)
      on the same test images. Targets: robust accuracy >= ART's at <= 0.7x its wall time; and the best model
      clean >= 85%, AutoAttack >= 75% at Linf 0.1 within 45 minutes of training.
fast: fast-AT against PGD-AT (same epochs): within 3 points of PGD-AT's robust accuracy in <= 1/3 of its time.
dp:   DP-SGD end to end at epsilon 3, delta 1e-5: >= 86% test accuracy.

Every row prints its wall time and thread count; copy the output into bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import sys
import time
from datetime import UTC, datetime

import numpy as np
import torch
from torch import nn

from bastion import load_dataset
from bastion.attacks import create_attack
from bastion.defenses.training import AdversarialTraining, PrivateTraining, adversarial_train, private_train
from bastion.models.torch import TorchClassifier
from bastion.models.zoo.nets import build
from bastion.types import Norm, ThreatModel

EPS = 0.1


def fresh(spec: object, seed: int = 0) -> TorchClassifier:
    torch.manual_seed(seed)
    return TorchClassifier(build("fmnist-cnn", (1, 28, 28), 10), spec)  # type: ignore[arg-type]


def judge(clf: TorchClassifier, x: torch.Tensor, y: torch.Tensor, aa_steps: int) -> tuple[float, float]:
    """Clean accuracy and robust accuracy under Bastion's AutoAttack (standard preset) at Linf EPS."""
    with torch.no_grad():
        clean = float((clf.predict_logits(x).argmax(1) == y).float().mean())
    attack = create_attack("autoattack", ThreatModel(Norm.LINF, EPS), steps=aa_steps)
    res = attack.run(clf, x, y, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        robust = float((clf.predict_logits(res.x_adv).argmax(1) == y).float().mean())
    return clean, robust


def part_art(args: argparse.Namespace, data: object, xe: torch.Tensor, ye: torch.Tensor) -> None:
    from art.defences.trainer import AdversarialTrainerMadryPGD
    from art.estimators.classification import PyTorchClassifier

    x, y = data.x_train[: args.n_train], data.y_train[: args.n_train]  # type: ignore[attr-defined]
    settings = AdversarialTraining(
        method="pgd-at", eps=EPS, steps=args.steps, epochs=args.epochs, batch_size=128, check_samples=500
    )
    ours = fresh(data.spec)  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    res = adversarial_train(ours, x, y, settings)
    t_ours = time.perf_counter() - t0

    theirs = fresh(data.spec)  # type: ignore[attr-defined]
    module = copy.deepcopy(theirs.module)
    art_clf = PyTorchClassifier(
        model=module,
        loss=nn.CrossEntropyLoss(),
        optimizer=torch.optim.Adam(module.parameters(), lr=1e-3),
        input_shape=(1, 28, 28),
        nb_classes=10,
        clip_values=(0.0, 1.0),
        device_type="cpu",
    )
    trainer = AdversarialTrainerMadryPGD(
        art_clf, nb_epochs=args.epochs, batch_size=128, eps=EPS, eps_step=2.5 * EPS / args.steps, max_iter=args.steps
    )
    # ART trains on all of x; Bastion held 500 of them out for its per-epoch check, so ART sees slightly more data
    t0 = time.perf_counter()
    trainer.fit(x.numpy().astype(np.float32), y.numpy())
    t_art = time.perf_counter() - t0
    theirs = TorchClassifier(art_clf.model, data.spec)  # type: ignore[attr-defined]

    c_ours, r_ours = judge(ours, xe, ye, args.aa_steps)
    c_art, r_art = judge(theirs, xe, ye, args.aa_steps)
    print(f"PGD-AT, Linf {EPS}, {args.epochs} epochs, PGD-{args.steps}, batch 128, {x.shape[0]} training images")
    print("| trainer | clean | AutoAttack robust | training seconds | time / ART |")
    print("|---|---|---|---|---|")
    print(
        f"| Bastion PGD-AT (best epoch {res.best_epoch}) | {c_ours:.4f} | {r_ours:.4f} | {t_ours:.0f} | "
        f"{t_ours / t_art:.2f}x |"
    )
    print(f"| ART AdversarialTrainerMadryPGD | {c_art:.4f} | {r_art:.4f} | {t_art:.0f} | 1.00x |")
    verdict = "MET" if r_ours >= r_art and t_ours <= 0.7 * t_art else "NOT MET"
    print(f"robust accuracy Bastion - ART: {r_ours - r_art:+.4f}; time ratio {t_ours / t_art:.2f} -> {verdict}")
    goal = "MET" if c_ours >= 0.85 and r_ours >= 0.75 and t_ours <= 45 * 60 else "NOT MET"
    print(f"clean >= 0.85 and AutoAttack >= 0.75 within 45 min: {goal}\n", flush=True)


def part_fast(args: argparse.Namespace, data: object, xe: torch.Tensor, ye: torch.Tensor) -> None:
    x, y = data.x_train[: args.n_train], data.y_train[: args.n_train]  # type: ignore[attr-defined]
    rows = []
    for method in ("pgd-at", "fast-at"):
        clf = fresh(data.spec)  # type: ignore[attr-defined]
        s = AdversarialTraining(method=method, eps=EPS, steps=args.steps, epochs=args.epochs)  # type: ignore[arg-type]
        t0 = time.perf_counter()
        res = adversarial_train(clf, x, y, s)
        seconds = time.perf_counter() - t0
        rows.append((method, *judge(clf, xe, ye, args.aa_steps), seconds, res))
    (_, _, r_pgd, t_pgd, _), (_, _, r_fast, t_fast, res_fast) = rows
    print(f"fast-AT vs PGD-AT, Linf {EPS}, {args.epochs} epochs, {x.shape[0]} training images")
    print("| method | clean | AutoAttack robust | seconds | best epoch | catastrophic overfitting |")
    print("|---|---|---|---|---|---|")
    for method, clean, robust, seconds, res in rows:
        print(
            f"| {method} | {clean:.4f} | {robust:.4f} | {seconds:.0f} | {res.best_epoch} | "
            f"{res.catastrophic_overfitting_at or '-'} |"
        )
    ok = r_fast >= r_pgd - 0.03 and t_fast <= t_pgd / 3
    print(f"fast-AT robust - PGD-AT: {r_fast - r_pgd:+.4f}, time {t_fast / t_pgd:.2f}x -> {'MET' if ok else 'NOT MET'}")
    for note in res_fast.notes:
        print(f"note: {note}")
    print(flush=True)


def part_dp(args: argparse.Namespace, data: object) -> None:
    x, y = data.x_train[: args.n_train], data.y_train[: args.n_train]  # type: ignore[attr-defined]
    clf = fresh(data.spec)  # type: ignore[attr-defined]
    s = PrivateTraining(epsilon=3.0, delta=1e-5, epochs=args.dp_epochs, batch_size=args.dp_batch, lr=args.dp_lr)
    res = private_train(clf, x, y, s)
    with torch.no_grad():
        acc = float((clf.predict_logits(data.x_test).argmax(1) == data.y_test).float().mean())  # type: ignore[attr-defined]
    print(
        f"DP-SGD end to end, epsilon 3, delta 1e-5, {x.shape[0]} training images, {args.dp_epochs} epochs, "
        f"batch {args.dp_batch}, lr {args.dp_lr}"
    )
    print("| model | test accuracy | epsilon spent | noise multiplier | seconds | target |")
    print("|---|---|---|---|---|---|")
    print(
        f"| fmnist-cnn (DP-SGD) | {acc:.4f} | {res.epsilon:.3f} | {res.noise_multiplier:.3f} | {res.seconds:.0f} | "
        f">= 0.86: {'MET' if acc >= 0.86 else 'NOT MET'} |\n",
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", choices=["art", "fast", "dp", "all"], default="all")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--steps", type=int, default=10, help="PGD steps while training")
    ap.add_argument("--n-train", type=int, default=60_000)
    ap.add_argument("--n-eval", type=int, default=1000, help="test images AutoAttack judges")
    ap.add_argument("--aa-steps", type=int, default=100, help="APGD iterations of AutoAttack")
    ap.add_argument("--dp-epochs", type=int, default=20)
    ap.add_argument("--dp-batch", type=int, default=1024)
    ap.add_argument("--dp-lr", type=float, default=2.0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    # the first optimizer a process makes imports torch._dynamo (about 4.6 s here): pay it before any timing, so
    # whichever trainer runs first is not charged for it
    torch.optim.Adam(nn.Linear(1, 1).parameters())
    data = load_dataset("fashion-mnist")
    xe, ye = data.x_test[: args.n_eval], data.y_test[: args.n_eval]
    print(f"# bench/hardening.py — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"python {sys.version.split()[0]}, torch threads {torch.get_num_threads()}, load average "
        f"{os.getloadavg()[0]:.2f}; AutoAttack (standard, {args.aa_steps} steps) on {args.n_eval} test images\n"
    )
    if args.part in ("art", "all"):
        part_art(args, data, xe, ye)
    if args.part in ("fast", "all"):
        part_fast(args, data, xe, ye)
    if args.part in ("dp", "all"):
        part_dp(args, data)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
