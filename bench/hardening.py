"""Hardening benchmark (issue 10): adversarial training and DP-SGD on Fashion-MNIST, side by side in one run.

    python bench/hardening.py --part art|fast|dp|all [--epochs N] [--n-train N] [--n-eval N] [--threads 2]

art:  Bastion's PGD-AT against IBM ART's AdversarialTrainerMadryPGD with the same fresh reference CNN (same seed), the
      same data, epochs (--compare-epochs), batch size and PGD steps at Linf 0.1; both judged by Bastion's AutoAttack
      (standard preset) on the same test images. Target: robust accuracy >= ART's at <= 0.7x its wall time.
      Then Bastion's best recipe for --epochs: target clean >= 85%, AutoAttack >= 75% at Linf 0.1 within 45 minutes.
fast: fast-AT against that PGD-AT run (same epochs): within 3 points of its robust accuracy in <= 1/3 of its time.
dp:   Opacus's per-sample-gradient modes against a non-private epoch (target: the fastest DP epoch <= 2x); DP-SGD at
      epsilon 3, delta 1e-5 end to end (tanh CNN, target >= 86%) and with ScatterNet features (>= 89%), Tramèr &
      Boneh's recipe (large batch, clipping 0.1, SGD lr 4); membership inference on both (AUC within 0.02 of chance)
      and on an overfit non-private model (500 members, 200 epochs: clearly above chance, AUC >= 0.6), beside a
      non-private one on the DP models' own 10,000 members for reference.

Every row prints its wall time and thread count; copy the output into bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from typing import Any

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


class EpochPrinter:
    """Prints one line per epoch of a training run (the library reports steps; the bench wants a log)."""

    def __init__(self, epochs: int) -> None:
        self.epochs, self.done, self.total, self.t0 = epochs, 0, 1, time.perf_counter()

    def task(self, description: str, total: int) -> None:
        self.description, self.total, self.done, self.t0 = description, max(1, total), 0, time.perf_counter()

    def advance(self, steps: int = 1) -> None:
        per_epoch = max(1, self.total // self.epochs)
        self.done += steps
        if self.done % per_epoch == 0:
            print(
                f"  {self.description}: epoch {self.done // per_epoch}/{self.epochs}, "
                f"{time.perf_counter() - self.t0:.0f} s",
                flush=True,
            )


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
    epochs = args.compare_epochs
    settings = AdversarialTraining(
        method="pgd-at",
        eps=EPS,
        steps=args.steps,
        epochs=epochs,
        batch_size=128,
        check_samples=500,
        schedule=args.schedule,
    )
    ours = fresh(data.spec)  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    res = adversarial_train(ours, x, y, settings, progress=EpochPrinter(epochs))
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
        art_clf, nb_epochs=epochs, batch_size=128, eps=EPS, eps_step=2.5 * EPS / args.steps, max_iter=args.steps
    )
    # ART trains on all of x; Bastion held 500 of them out for its per-epoch check, so ART sees slightly more data
    t0 = time.perf_counter()
    trainer.fit(x.numpy().astype(np.float32), y.numpy())
    t_art = time.perf_counter() - t0
    theirs = TorchClassifier(art_clf.model, data.spec)  # type: ignore[attr-defined]

    c_ours, r_ours = judge(ours, xe, ye, args.aa_steps)
    c_art, r_art = judge(theirs, xe, ye, args.aa_steps)
    print(f"PGD-AT, Linf {EPS}, {epochs} epochs, PGD-{args.steps}, batch 128, {x.shape[0]} training images")
    print("| trainer | clean | AutoAttack robust | training seconds | time / ART |")
    print("|---|---|---|---|---|")
    print(
        f"| Bastion PGD-AT (best epoch {res.best_epoch}) | {c_ours:.4f} | {r_ours:.4f} | {t_ours:.0f} | "
        f"{t_ours / t_art:.2f}x |"
    )
    print(f"| ART AdversarialTrainerMadryPGD | {c_art:.4f} | {r_art:.4f} | {t_art:.0f} | 1.00x |")
    verdict = "MET" if r_ours >= r_art and t_ours <= 0.7 * t_art else "NOT MET"
    print(f"robust accuracy Bastion - ART: {r_ours - r_art:+.4f}; time ratio {t_ours / t_art:.2f} -> {verdict}\n")


def part_fast(args: argparse.Namespace, data: object, xe: torch.Tensor, ye: torch.Tensor) -> None:
    """Bastion's best PGD-AT run (--epochs), then the single-step methods (fast-AT, N-FGSM) for --fast-epochs (default
    the same epochs): the target gives them a third of PGD-AT's time, which may buy more epochs."""
    x, y = data.x_train[: args.n_train], data.y_train[: args.n_train]  # type: ignore[attr-defined]
    rows = []
    for method in args.methods.split(","):
        clf = fresh(data.spec)  # type: ignore[attr-defined]
        lr = args.fast_lr if method != "pgd-at" else None  # fresh weights: Wong et al.'s peak
        epochs = args.epochs if method == "pgd-at" or args.fast_epochs is None else args.fast_epochs
        s = AdversarialTraining(
            method=method,  # type: ignore[arg-type]
            eps=EPS,
            steps=args.steps,
            epochs=epochs,
            lr=lr,
            schedule=args.schedule,  # PGD-AT's; fast-AT always uses its cyclic one
        )
        t0 = time.perf_counter()
        res = adversarial_train(clf, x, y, s, progress=EpochPrinter(epochs))
        seconds = time.perf_counter() - t0
        rows.append((method, *judge(clf, xe, ye, args.aa_steps), seconds, res))
        if method == "pgd-at":
            c, r = rows[-1][1], rows[-1][2]
            goal = "MET" if c >= 0.85 and r >= 0.75 and seconds <= 45 * 60 else "NOT MET"
            print(
                f"best PGD-AT ({args.epochs} epochs, {seconds / 60:.1f} min, best epoch {res.best_epoch}): clean "
                f"{c:.4f}, AutoAttack {r:.4f}; clean >= 0.85 and AutoAttack >= 0.75 within 45 min: {goal}",
                flush=True,
            )
    single = args.fast_epochs if args.fast_epochs is not None else args.epochs
    print(
        f"single-step methods ({single} epochs) vs PGD-AT ({args.epochs} epochs), Linf {EPS}, {x.shape[0]} training images"
    )
    print("| method | clean | AutoAttack robust | seconds | best epoch | catastrophic overfitting |")
    print("|---|---|---|---|---|---|")
    for method, clean, robust, seconds, res in rows:
        print(
            f"| {method} | {clean:.4f} | {robust:.4f} | {seconds:.0f} | {res.best_epoch} | "
            f"{res.catastrophic_overfitting_at or '-'} |"
        )
    pgd = [r for r in rows if r[0] == "pgd-at"]
    for method, _, robust, seconds, res in rows:
        if method == "pgd-at":
            continue
        if pgd:
            r_pgd, t_pgd = pgd[0][2], pgd[0][3]
            ok = robust >= r_pgd - 0.03 and seconds <= t_pgd / 3
            print(
                f"{method} robust - PGD-AT: {robust - r_pgd:+.4f}, time {seconds / t_pgd:.2f}x -> "
                f"{'MET' if ok else 'NOT MET'}"
            )
        else:
            print(f"{method}: no PGD-AT in this run (--methods), so no verdict")
        for note in res.notes:
            print(f"note ({method}): {note}")
    print(flush=True)


def _accuracy(clf: TorchClassifier, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((clf.predict_logits(x).argmax(1) == y).float().mean())


def _plain_epoch(
    clf: TorchClassifier, x: torch.Tensor, y: torch.Tensor, batch: int, lr: float, channels_last: bool = True
) -> float:
    """Seconds of one non-private SGD epoch over (x, y) at ``batch``: the reference a DP epoch is compared with. In
    channels_last by default, as Bastion's own training loops run conv nets (twice as fast as NCHW for dp-cnn)."""
    from torch.utils.data import DataLoader, TensorDataset

    layout = torch.channels_last if channels_last else torch.contiguous_format
    module = clf.module.to(memory_format=layout)
    opt = torch.optim.SGD(module.parameters(), lr=lr, momentum=0.9)
    loader = DataLoader(TensorDataset(clf.prepare(x), y), batch_size=batch, shuffle=True)
    module.train()
    t0 = time.perf_counter()
    for xb, yb in loader:
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(module(xb.contiguous(memory_format=layout)), yb).backward()
        opt.step()
    module.eval()
    return time.perf_counter() - t0


def dp_speed(args: argparse.Namespace, x: torch.Tensor, y: torch.Tensor, model: Any, settings: Any) -> str:
    """One epoch in each of Opacus's per-sample-gradient modes, then the fastest and the non-private epoch in
    alternating rounds (the verdict is on the median ratio of the rounds: one epoch each varied by 10% here). The
    non-private reference is the faster layout, channels_last; DP trains in channels_last in ghost mode, NCHW in
    the others."""
    from bastion.defenses.training import ghost

    print(
        f"Opacus per-sample-gradient modes: dp-cnn, one epoch over {x.shape[0]} images, batch {args.dp_batch} "
        "(ghost: Opacus's ghost clipping with Bastion's convolution norms, defenses/training/ghost.py)"
    )
    print("| training | seconds | vs non-private |")
    print("|---|---|---|")
    _plain_epoch(model("dp-cnn"), x[:4096], y[:4096], args.dp_batch, args.dp_lr)  # warm up
    nchw = _plain_epoch(model("dp-cnn"), x, y, args.dp_batch, args.dp_lr, channels_last=False)
    plain = _plain_epoch(model("dp-cnn"), x, y, args.dp_batch, args.dp_lr)
    print(f"| non-private SGD, channels_last (the reference) | {plain:.1f} | 1.00x |")
    print(f"| non-private SGD, NCHW | {nchw:.1f} | {nchw / plain:.2f}x |")
    timings = {}
    for mode in ("hooks", "functorch", "ghost"):
        s = dataclasses.replace(settings(args.dp_epochs, mode), epochs=1)
        r = private_train(model("dp-cnn"), x, y, s)
        timings[mode] = r.seconds
        print(f"| DP-SGD, {mode} | {r.seconds:.1f} | {r.seconds / plain:.2f}x |", flush=True)
    fastest = min(timings, key=timings.__getitem__)
    chosen = {
        f"{k[0]}->{k[1]} k{k[2][0]} on {k[7]}{'' if k[8] else ' (channels_last)'}": v
        for k, v in ghost.choices().items()
    }
    print(f"convolution norm methods chosen by timing: {chosen}")
    ratios = []
    for i in range(args.dp_rounds):
        p = _plain_epoch(model("dp-cnn"), x, y, args.dp_batch, args.dp_lr)
        d = private_train(model("dp-cnn"), x, y, dataclasses.replace(settings(args.dp_epochs, fastest), epochs=1))
        ratios.append(d.seconds / p)
        print(
            f"round {i + 1}: non-private {p:.1f} s, DP-SGD {fastest} {d.seconds:.1f} s, {ratios[-1]:.2f}x", flush=True
        )
    median = statistics.median(ratios)
    ok = median <= 2
    print(
        f"fastest: {fastest}, median of {len(ratios)} rounds {median:.2f}x a non-private epoch (rounds: "
        f"{', '.join(f'{r:.2f}' for r in ratios)}) -> {'MET' if ok else 'NOT MET'}\n"
    )
    return fastest


def part_dp(args: argparse.Namespace, data: object) -> None:
    """Per-sample-gradient modes against a non-private epoch; DP-SGD end to end (Tramèr & Boneh's tanh CNN) and with
    ScatterNet features at epsilon 3, delta 1e-5; then membership inference on the private models and on an overfit
    non-private one."""
    from bastion.attacks.inference import loss_threshold

    x, y = data.x_train[: args.n_train], data.y_train[: args.n_train]  # type: ignore[attr-defined]
    xt, yt = data.x_test, data.y_test  # type: ignore[attr-defined]
    spec = data.spec  # type: ignore[attr-defined]

    def model(arch: str) -> TorchClassifier:
        torch.manual_seed(0)
        return TorchClassifier(build(arch, (1, 28, 28), 10), spec)

    def settings(epochs: int, mode: str = "hooks") -> PrivateTraining:
        return PrivateTraining(
            epsilon=3.0,
            delta=1e-5,
            epochs=epochs,
            batch_size=args.dp_batch,
            lr=args.dp_lr,
            max_grad_norm=args.dp_clip,
            grad_sample_mode=mode,  # type: ignore[arg-type]
        )

    fastest = dp_speed(args, x, y, model, settings)
    if args.part == "dp-speed":
        return

    print(
        f"DP-SGD at epsilon 3, delta 1e-5 (PRV), {x.shape[0]} training images, {args.dp_epochs} epochs, expected "
        f"batch {args.dp_batch}, SGD lr {args.dp_lr} momentum 0.9, clipping norm {args.dp_clip}, {fastest} mode"
    )
    print("| model | test accuracy | epsilon spent | noise multiplier | seconds | target |")
    print("|---|---|---|---|---|---|")
    private = {}
    for arch, target in (("dp-cnn", 0.86), ("scatternet-linear", 0.89)):
        clf = model(arch)
        t0 = time.perf_counter()
        r = private_train(clf, x, y, settings(args.dp_epochs, fastest), progress=EpochPrinter(args.dp_epochs))
        total = time.perf_counter() - t0  # includes ScatterNet's one pass over the data
        acc = _accuracy(clf, xt, yt)
        private[arch] = clf
        print(
            f"| {arch} | {acc:.4f} | {r.epsilon:.3f} | {r.noise_multiplier:.3f} | {total:.0f} | "
            f">= {target}: {'MET' if acc >= target else 'NOT MET'} |",
            flush=True,
        )
    print()

    # the membership attack's positive controls: fmnist-cnn trained without privacy on the DP models' 10,000 members
    # (its generalisation gap is small), and on a few hundred members long enough to fit them exactly (overfit)
    n = args.mia_members
    members, outsiders = (x[:n], y[:n]), (xt[:n], yt[:n])
    nc, ec = args.mia_control_members, args.mia_control_epochs
    rows = [
        ("dp-cnn (DP, epsilon 3)", private["dp-cnn"], members, outsiders, "private"),
        ("scatternet-linear (DP, epsilon 3)", private["scatternet-linear"], members, outsiders, "private"),
        (
            f"fmnist-cnn (non-private, {n} members, {args.mia_epochs} epochs)",
            _fit_plain(model("fmnist-cnn"), x[:n], y[:n], args.mia_epochs),
            members,
            outsiders,
            "reference",
        ),
        (
            f"fmnist-cnn (non-private, overfit: {nc} members, {ec} epochs)",
            _fit_plain(model("fmnist-cnn"), x[:nc], y[:nc], ec),
            (x[:nc], y[:nc]),
            (xt[:nc], yt[:nc]),
            "control",
        ),
    ]
    print(
        f"Membership inference (loss threshold, scored by the float64 logit margin): each model's members against as "
        f"many test images; the DP models' members are the first {n} of their training images; AUC standard error "
        f"by Hanley & McNeil"
    )
    print("| model | train accuracy | test accuracy | AUC | std. error | AUC - 0.5 | TPR at 1% FPR | target |")
    print("|---|---|---|---|---|---|---|---|")
    for name, clf, ins, outs, role in rows:
        m = loss_threshold(clf, ins, outs)
        if role == "private":
            target = f"abs(AUC - 0.5) <= 0.02: {'MET' if abs(m.auc - 0.5) <= 0.02 else 'NOT MET'}"
        elif role == "control":
            target = f"clearly above chance (>= 0.6): {'MET' if m.auc >= 0.6 else 'NOT MET'}"
        else:
            target = "(reference: same members as the DP models)"
        print(
            f"| {name} | {_accuracy(clf, *ins):.4f} | {_accuracy(clf, xt, yt):.4f} | {m.auc:.4f} | "
            f"{_auc_se(m.auc, m.members, m.non_members):.4f} | {m.auc - 0.5:+.4f} | {m.tpr_at_1pct_fpr:.4f} | "
            f"{target} |",
            flush=True,
        )
    print()


def _fit_plain(clf: TorchClassifier, x: torch.Tensor, y: torch.Tensor, epochs: int) -> TorchClassifier:
    """Non-private Adam training (lr 1e-3, batch 128, no regularisation) on exactly ``x``: a membership control."""
    opt = torch.optim.Adam(clf.module.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    n = x.shape[0]
    for _ in range(epochs):
        order = torch.randperm(n, generator=g)
        clf.module.train()
        for k in range(0, n, 128):
            idx = order[k : k + 128]
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(clf.train_logits(x[idx]), y[idx]).backward()
            opt.step()
    clf.module.eval()
    return clf


def _auc_se(auc: float, n_pos: int, n_neg: int) -> float:
    """Hanley & McNeil (1982)'s standard error of an ROC AUC."""
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc * auc) + (n_neg - 1) * (q2 - auc * auc)) / (n_pos * n_neg)
    return float(var**0.5)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", choices=["art", "fast", "dp", "dp-speed", "all"], default="all")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=11, help="epochs of the best PGD-AT run and of fast-AT")
    ap.add_argument("--compare-epochs", type=int, default=3, help="epochs of the PGD-AT run against ART")
    ap.add_argument("--steps", type=int, default=10, help="PGD steps while training")
    ap.add_argument(
        "--schedule", choices=["constant", "cosine", "step"], default="step", help="PGD-AT's learning-rate schedule"
    )
    ap.add_argument("--n-train", type=int, default=60_000)
    ap.add_argument("--n-eval", type=int, default=1000, help="test images AutoAttack judges")
    ap.add_argument("--fast-lr", type=float, default=0.2, help="fast-AT's cyclic peak learning rate (fresh weights)")
    ap.add_argument("--fast-epochs", type=int, default=None, help="--part fast: epochs of the single-step methods")
    ap.add_argument("--methods", default="pgd-at,fast-at,n-fgsm", help="--part fast: the methods, in order")
    ap.add_argument("--aa-steps", type=int, default=100, help="APGD iterations of AutoAttack")
    ap.add_argument("--dp-epochs", type=int, default=40)
    ap.add_argument("--dp-batch", type=int, default=2048)
    ap.add_argument("--dp-lr", type=float, default=4.0)
    ap.add_argument("--dp-rounds", type=int, default=3, help="alternating non-private/DP epochs for the speed verdict")
    ap.add_argument("--dp-clip", type=float, default=0.1)
    ap.add_argument("--mia-members", type=int, default=10_000)
    ap.add_argument("--mia-epochs", type=int, default=30, help="epochs of the non-private model on the DP members")
    ap.add_argument("--mia-control-members", type=int, default=500, help="members of the overfit positive control")
    ap.add_argument("--mia-control-epochs", type=int, default=200)
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
        f"{os.getloadavg()[0]:.2f}; AutoAttack (standard, {args.aa_steps} steps) on {args.n_eval} test images; "
        f"PGD-AT learning-rate schedule: {args.schedule}\n"
    )
    if args.part in ("art", "all"):
        part_art(args, data, xe, ye)
    if args.part in ("fast", "all"):
        part_fast(args, data, xe, ye)
    if args.part in ("dp", "dp-speed", "all"):
        part_dp(args, data)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
