"""Input detectors, naive beside adaptive (issue 9 point 4): detection at 5% FPR on FGSM, PGD, C&W and Square, and
on PGD against the model and the detector together (BPDA through feature squeezing).

Runs the assessment family `detection` through `run_assessment` (the code `bastion assess` runs) on the
Fashion-MNIST reference CNN (bench/evasion.py's, trained once and cached under bench/.cache): N test images are
attacked, the detectors are fitted on up to 5,000 of the other test images. The anchor is each detector's naive
figure; the ratio printed is adaptive / naive (PGD). With --sweep it first measures the squeezers for this data.

    .venv/bin/python bench/detectors.py --threads 2
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import UTC, datetime

import torch

from bastion import load_dataset
from bastion.assess.policy import parse_policy
from bastion.assess.runner import run_assessment
from bastion.attacks import create_attack
from bastion.defenses.preprocessing import BitDepth, MedianFilter
from bastion.detectors.input import FeatureSqueezing
from bastion.types import Norm, ThreatModel

sys.path.insert(0, os.path.dirname(__file__))
from evasion import reference_model  # the shared, cached reference CNN


def sweep(classifier: object, data: object, n: int) -> None:
    """Detection of naive PGD (Linf 0.1) at 5% FPR for each squeezer setting: the choice the paper says to make
    per dataset (Xu et al. use bit depth 1 for MNIST, 5 for CIFAR-10)."""
    x_test, y_test = data.x_test, data.y_test  # type: ignore[attr-defined]
    x, y = x_test[:n], y_test[:n]
    fit = x_test[n : n + 5000]
    adv = create_attack("pgd", ThreatModel(Norm.LINF, 0.1)).run(
        classifier, x, y, generator=torch.Generator().manual_seed(0)
    )
    fooled = classifier.predict_logits(adv.x_adv).argmax(1) != y  # type: ignore[attr-defined]
    print("| squeezers | clean FPR (held out) | PGD detected |")
    print("|---|---|---|")
    for bits in (1, 2, 3, 4, 5):
        for median in (0, 2, 3):
            sq = (BitDepth(bits),) + ((MedianFilter(median),) if median else ())
            det = FeatureSqueezing(model=classifier, squeezers=sq).fit(fit)
            rate = float(det.predict(adv.x_adv[fooled]).float().mean())
            print(f"| bit depth {bits}{f' + median {median}' if median else ''} | {det.clean_fpr_:.3f} | {rate:.3f} |")
    print()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n", type=int, default=500, help="test images attacked")
    ap.add_argument("--epochs", type=int, default=3, help="of the reference CNN (bench/evasion.py's)")
    ap.add_argument("--eps", type=float, default=0.1, help="Linf budget of FGSM, PGD, Square and the adaptive PGD")
    ap.add_argument("--cw-eps", type=float, default=2.0, help="L2 budget of C&W")
    ap.add_argument("--steps", type=int, default=50, help="adaptive PGD steps per detector-loss weight")
    ap.add_argument("--bit-depth", type=int, default=None)
    ap.add_argument("--median", type=int, default=None)
    ap.add_argument("--sweep", action="store_true", help="first measure the squeezers on this data")
    ap.add_argument("--report", default=None, help="also write the HTML report into this folder")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    _, loaded = reference_model(args.epochs)
    classifier = loaded.classifier  # type: ignore[attr-defined]
    data = load_dataset("fashion-mnist")
    print(f"# bench/detectors.py — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"python {sys.version.split()[0]}, torch threads {torch.get_num_threads()}, load average before "
        f"{load_before[0]:.2f}"
    )
    print(
        f"model: fmnist-cnn, {args.epochs} epochs, clean accuracy {loaded.card.clean_accuracy:.4f}; {args.n} test "  # type: ignore[attr-defined]
        f"images attacked, detectors fitted on 5,000 others (20% held out for the threshold at 5% FPR)\n"
    )
    if args.sweep:
        sweep(classifier, data, args.n)
    eps = args.eps
    params = {
        "attacks": [
            {"attack": "fgsm", "eps": eps},
            {"attack": "pgd", "eps": eps, "params": {"steps": 40}},
            {"attack": "cw", "norm": "l2", "eps": args.cw_eps, "params": {"steps": 100, "binary_search_steps": 5}},
            {"attack": "square", "eps": eps, "params": {"max_queries": 1000}},
        ],
        "adaptive_eps": eps,
        "adaptive_steps": args.steps,
        "fpr": 0.05,
        "fit_samples": 5000,
        "bit_depth": args.bit_depth,
        "median": args.median,
    }
    policy = parse_policy(
        {"name": "bench-detectors", "samples": args.n, "probes": [{"family": "detection", "params": params}]}
    )
    t0 = time.perf_counter()
    result = run_assessment(classifier, data.x_test, data.y_test, policy)
    seconds = time.perf_counter() - t0
    rows = {(str(r.at["detector"]), str(r.at["attack"])): r for r in result.rows}
    detectors = list(dict.fromkeys(d for d, _ in rows))
    attacks = [a["attack"] for a in params["attacks"]]
    print(
        f"Linf eps {eps} (C&W: L2 eps {args.cw_eps}); detection rate = flagged share of the examples that fool the model"
    )
    print(f"(evaded = share of attacked inputs that fool the model and pass the detector); {seconds:.0f} s in all\n")
    print(
        "| detector | clean FPR | "
        + " | ".join(f"{a} detected (evaded)" for a in attacks)
        + " | adaptive detected (evaded) | adaptive / naive PGD |"
    )
    print("|---|---|" + "---|" * len(attacks) + "---|---|")
    for d in detectors:
        fpr = rows[(d, "none")].metrics.get("false_positive_rate")
        cells = []
        for a in attacks:
            m = rows[(d, a)].metrics
            cells.append(f"{m['detection_rate'].value:.3f} ({m['evasion_rate'].value:.3f})" if m else "not run")
        ad = rows[(d, "detector-aware-pgd")]
        if ad.metrics:
            dr, ev = ad.metrics["detection_rate"].value, ad.metrics["evasion_rate"].value
            naive_pgd = rows[(d, "pgd")].metrics["detection_rate"].value
            ratio = f"{dr / naive_pgd:.2f}" if naive_pgd else "n/a"
            adaptive = f"{dr:.3f} ({ev:.3f})"
        else:
            adaptive, ratio = f"NOT MEASURED: {ad.note}", "n/a"
        clean = f"{fpr.value:.3f}" if fpr else "not run"
        print(f"| {d} | {clean} | " + " | ".join(cells) + f" | {adaptive} | {ratio} |")
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")
    if args.report:
        from bastion.reports import build_report, write_report

        report = build_report(
            result,
            model={"name": "fmnist-cnn", "epochs": args.epochs},
            data={"name": "fashion-mnist"},
            class_names=tuple(data.spec.class_names),
        )
        print("report:", write_report(report, args.report)[0])


if __name__ == "__main__":
    main()
