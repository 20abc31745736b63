"""Poisoning and data-integrity benchmark (issue 12): IBM ART's poison detectors and Bastion's side by side.

    python bench/poisoning.py [--threads 2] [--epochs 5] [--n-train 60000] [--part detect|clean|labels|all]

Data: Fashion-MNIST (Debian's dataset-fashion-mnist), the first --n-train training images, the full test split.
Every model is the reference CNN (fmnist-cnn, Adam lr 1e-3, batch 128, --epochs epochs, seed 0): the "target's
recipe" each attack trains with.

detect: BadNets at 5% and 1% of the training set (3x3 checkerboard in the bottom-right corner, target class 0), a
      blended trigger at 5% (seeded noise, alpha 0.15) and the adaptive attack against these detectors: Qi et al.'s
      adaptive blend at 5% (half of a 4x4-tiled noise trigger per sample at alpha 0.15, the whole trigger at test time
      at 0.2) with as many correctly labelled cover samples carrying it; precision and recall count the relabelled
      rows. For each: the poisoned model's clean accuracy and attack
      success rate (triggered test images of other classes answered as class 0), then every detector over the whole
      training set, precision and recall against the rows the attack changed. Anchors: ART 1.20's ActivationDefence
      (its defaults: 2 clusters, 10 PCA dimensions, size analysis, on its choice of layer) and
      SpectralSignatureDefense (expected poison share 0.33, eps multiplier 1.5), on the same model and data. Bastion:
      the four registered detectors, each with the shared decision rule (gap 3), and confusion training (Qi et al.
      2023; 2,000 test images as its trusted rows; precision over the relabelled rows, and over every row the attack
      changed, cover rows included). Target at 5% BadNets: precision and recall >= 0.9. Confusion training also runs
      on the clean model: the rows it flags there are false positives.
      Neural Cleanse (400 steps, 1,000 test images) on the 5% BadNets model and on the clean model: it must flag
      the first and name class 0, and flag nothing on the second.
clean: the 5% BadNets set through Bastion's cleaning (check with the poisoned model's features, remove the flagged
      rows and exact duplicates), retrained with the same recipe. Target: attack success rate <= 5% and clean
      accuracy within 1 point of the same recipe trained on the unpoisoned set.
clean-label: Turner et al.'s attack at 2.5% of the training set (half of class 0; PGD eps 0.15 against the clean
      model, then the 3x3 patch, labels unchanged): its success rate and what the detectors see.
adaptive: the adaptive blend through the pipeline (exact duplicates, the feature detector, confusion training with
      2,000 test images as the trusted rows; --adaptive-labels adds the label check), then retraining: what the
      defense as a whole does against the attack built to beat its feature detectors.
adaptive-ct: the adaptive blend against an attacker who knows confusion training runs: 1, 2 and 4 cover rows per
      poisoned row (the trigger alone then predicts the target for half, a third, a fifth of the rows carrying it).
labels: 10% of the labels flipped at random; confident learning (cleanlab) over 3-fold cross-validated fmnist-cnn
      probabilities (epochs for about 1,500 steps each: 5). Target: >= 80% of the flipped labels found at >= 80% precision.

Copy the output into bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import torch

from bastion import load_dataset
from bastion._torch import make_generator
from bastion.attacks.poisoning import (
    AdaptiveBlend,
    BadNets,
    Blended,
    BlendTrigger,
    CleanLabel,
    LabelFlip,
    PatchTrigger,
    success_rate,
)
from bastion.defenses.backdoor_scan import neural_cleanse
from bastion.defenses.data import (
    POISON_DETECTORS,
    CheckSettings,
    check_dataset,
    clean_dataset,
    confusion_training,
    detect_poison,
)
from bastion.defenses.data.cleaning import features_of, label_epochs_for
from bastion.defenses.data.labels import label_issues
from bastion.models.zoo.recipe import Recipe, train_recipe


def pr(flagged: torch.Tensor, truth: torch.Tensor) -> tuple[float, float, int]:
    tp = int((flagged & truth).sum())
    return tp / max(1, int(flagged.sum())), tp / max(1, int(truth.sum())), int(flagged.sum())


def art_detectors(model: Any, x: torch.Tensor, y: torch.Tensor, truth: torch.Tensor, classes: int) -> list[tuple]:
    """ART's ActivationDefence and SpectralSignatureDefense on the same model and data."""
    from art.defences.detector.poison import ActivationDefence, SpectralSignatureDefense
    from art.estimators.classification import PyTorchClassifier

    module = model.module.float().to(memory_format=torch.contiguous_format)
    clf = PyTorchClassifier(
        module,
        loss=torch.nn.CrossEntropyLoss(),
        input_shape=tuple(x.shape[1:]),
        nb_classes=classes,
        clip_values=(0.0, 1.0),
        device_type="cpu",
    )
    xs, ys = x.numpy(), np.eye(classes, dtype=np.float32)[y.numpy()]
    rows = []
    for name, make in (
        ("ART ActivationDefence", lambda: ActivationDefence(clf, xs, ys)),
        ("ART SpectralSignatureDefense", lambda: SpectralSignatureDefense(clf, xs, ys, expected_pp_poison=0.33)),
    ):
        t0 = time.perf_counter()
        det = make()
        _, is_clean = (
            det.detect_poison(nb_clusters=2, nb_dims=10, reduce="PCA") if "Activation" in name else det.detect_poison()
        )
        flagged = torch.from_numpy(np.asarray(is_clean) == 0)
        p, r, n = pr(flagged, truth)
        rows.append((name, p, r, n, time.perf_counter() - t0, ""))
    return rows


def confusion_row(
    module: Any, x: torch.Tensor, y: torch.Tensor, ds: Any, truth: torch.Tensor, changed: torch.Tensor
) -> tuple:
    """Confusion training with 2,000 test images as the trusted rows (what `bastion data check` takes by default)."""
    pick = torch.randperm(ds.x_test.shape[0], generator=torch.Generator().manual_seed(0))[:2000]
    t1 = time.perf_counter()
    rep = confusion_training(module, x, y, ds.x_test[pick], ds.y_test[pick], num_classes=ds.spec.num_classes)
    p, r, n = pr(rep.flagged, truth)
    pc, _, _ = pr(rep.flagged, changed)
    steps = "/".join(str(f["steps"]) for f in rep.folds)
    note = (
        f"{rep.attacked}; precision over every row the attack changed {pc:.3f}; steps {steps}; held-out false "
        f"{rep.false_rate:.3f}; fitted per class {[c.fitted for c in rep.classes]}"
    )
    return ("Bastion confusion-training", p, r, n, time.perf_counter() - t1, note)


def table(title: str, rows: list[tuple]) -> None:
    print(f"\n{title}")
    print("| detector | precision | recall | flagged | seconds | attacked classes |")
    print("|---|---|---|---|---|---|")
    for name, p, r, n, s, note in rows:
        print(f"| {name} | {p:.3f} | {r:.3f} | {n} | {s:.1f} | {note} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--n-train", type=int, default=60000)
    ap.add_argument(
        "--part", choices=["detect", "clean", "labels", "adaptive", "adaptive-ct", "clean-label", "all"], default="all"
    )
    ap.add_argument("--no-art", action="store_true")
    ap.add_argument("--cover", type=float, default=1.0, help="--part adaptive: cover rows per poisoned row")
    ap.add_argument("--adaptive-labels", action="store_true", help="add the label check (13 min) to --part adaptive")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    ds = load_dataset("fashion-mnist")
    ds = replace(ds, x_train=ds.x_train[: a.n_train], y_train=ds.y_train[: a.n_train])
    recipe = Recipe("fmnist-cnn", epochs=a.epochs)
    print(f"# Poisoning benchmark — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, python "
        f"{sys.version.split()[0]}, torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.2f}"
    )
    print(
        f"data: Fashion-MNIST, {ds.x_train.shape[0]} training and {ds.x_test.shape[0]} test images; recipe {recipe.to_dict()}"
    )
    t0 = time.perf_counter()
    clean = train_recipe(recipe, ds, ds.x_train, ds.y_train, seed=0)
    print(f"clean model: test accuracy {clean.card.clean_accuracy:.4f}, trained in {time.perf_counter() - t0:.0f} s")
    scenarios = [
        ("BadNets 5%", BadNets(target=0, trigger=PatchTrigger(size=3)), 0.05),
        ("BadNets 1%", BadNets(target=0, trigger=PatchTrigger(size=3)), 0.01),
        ("blended 5%", Blended(target=0, trigger=BlendTrigger(alpha=0.15)), 0.05),
        ("adaptive blend 5% + 5% cover (adaptive: built against latent separation)", AdaptiveBlend(target=0), 0.05),
    ]
    if a.part in ("detect", "all"):
        none = torch.zeros(ds.x_train.shape[0], dtype=torch.bool)
        row = confusion_row(clean.module, ds.x_train, ds.y_train, ds, none, none)
        print(f"\n## no poison: confusion training on the clean model flags {row[3]} rows ({row[4]:.0f} s): {row[5]}")
    if a.part in ("detect", "clean", "all"):
        for title, attack, rate in scenarios if a.part != "clean" else scenarios[:1]:
            t0 = time.perf_counter()
            ps = attack.poison(ds.x_train, ds.y_train, ds.spec, rate=rate, generator=make_generator(0))
            model = train_recipe(recipe, ds, ps.x, ps.y, seed=0)
            truth = ps.poisoned.clone()
            if "relabelled" in ps.params:  # cover rows changed too, but the backdoor's samples are the relabelled ones
                truth[:] = False
                truth[torch.tensor(ps.params["relabelled"])] = True
            asr, counted = success_rate(model.classifier, attack, ds.x_test, ds.y_test, ds.spec)
            base, _ = success_rate(clean.classifier, attack, ds.x_test, ds.y_test, ds.spec)
            print(
                f"\n## {title}: {int(truth.sum())} poisoned rows ({ps.count} changed); poisoned model clean accuracy {model.card.clean_accuracy:.4f} "
                f"(clean model {clean.card.clean_accuracy:.4f}), attack success rate {asr:.4f} on {counted} triggered "
                f"test images (clean model: {base:.4f}); trained in {time.perf_counter() - t0:.0f} s"
            )
            rows = []
            if a.part != "clean":
                if not a.no_art:
                    rows += art_detectors(model, ps.x, ps.y, truth, ds.spec.num_classes)
                feats = features_of(model.classifier, ps.x)
                for name in POISON_DETECTORS.names():
                    t1 = time.perf_counter()
                    rep = detect_poison(feats, ps.y, detector=name)
                    p, r, n = pr(rep.flagged, truth)
                    gaps = ", ".join(f"{c.label}:{c.gap:.1f}" for c in rep.classes)
                    rows.append((f"Bastion {name}", p, r, n, time.perf_counter() - t1, f"{rep.attacked} (gaps {gaps})"))
                rows.append(confusion_row(model.module, ps.x, ps.y, ds, truth, ps.poisoned))
                table(f"{title}: detection over all {ps.x.shape[0]} training rows", rows)
                if title == "BadNets 5%":
                    for who, m in (("the BadNets 5% model", model), ("the clean model", clean)):
                        t1 = time.perf_counter()
                        scan = neural_cleanse(m.classifier, ds.x_test[:1000])
                        norms = ", ".join(f"{i}:{v:.1f}" for i, v in enumerate(scan.norms))
                        anomaly = ", ".join(f"{i}:{v:.2f}" for i, v in enumerate(scan.anomaly))
                        print(
                            f"\nNeural Cleanse on {who} (1000 test images, {scan.settings['steps']} steps, "
                            f"{time.perf_counter() - t1:.0f} s): flagged classes {list(scan.flagged)}; mask L1 per "
                            f"class {norms}; anomaly index {anomaly}"
                        )
                    best = max((r for r in rows if r[0].startswith("Bastion")), key=lambda r: min(r[1], r[2]))
                    ok = best[1] >= 0.9 and best[2] >= 0.9
                    print(
                        f"\nbest Bastion detector at 5% BadNets: {best[0]} precision {best[1]:.3f} recall {best[2]:.3f} -> {'MET' if ok else 'NOT MET'}"
                    )
            if title == "BadNets 5%" and a.part in ("clean", "all"):
                t1 = time.perf_counter()
                pds = replace(ds, x_train=ps.x, y_train=ps.y)
                settings = CheckSettings(checks=("schema", "range", "duplicates", "poison"), recipe=recipe)
                chk = check_dataset(pds, settings=settings, model=model.classifier)
                cleaned = clean_dataset(pds, chk)
                retrained = train_recipe(recipe, ds, cleaned.x, cleaned.y, seed=0)
                asr2, _ = success_rate(retrained.classifier, attack, ds.x_test, ds.y_test, ds.spec)
                removed = torch.zeros(ps.x.shape[0], dtype=torch.bool)
                removed[cleaned.removed_index] = True
                p, r, n = pr(removed, ps.poisoned)
                drop = clean.card.clean_accuracy - retrained.card.clean_accuracy
                ok = asr2 <= 0.05 and abs(drop) <= 0.01
                print(
                    f"\n### cleaning the 5% BadNets set (checks: schema, range, duplicates, poison) and retraining\n"
                    f"removed {n} rows ({p:.3f} of them poisoned; {r:.3f} of the poisoned removed); retrained model: "
                    f"clean accuracy {retrained.card.clean_accuracy:.4f} (clean-data model {clean.card.clean_accuracy:.4f}, "
                    f"difference {drop * 100:+.2f} points), attack success rate {asr2:.4f} (before cleaning {asr:.4f}); "
                    f"{time.perf_counter() - t1:.0f} s -> {'MET' if ok else 'NOT MET'}"
                )
    if a.part in ("clean-label", "all"):
        # Turner et al.: target-class images hardened by PGD against the clean model, then the patch; labels kept
        t0 = time.perf_counter()
        attack = CleanLabel(target=0, trigger=PatchTrigger(size=3)).with_surrogate(clean.classifier)
        ps = attack.poison(ds.x_train, ds.y_train, ds.spec, rate=0.025, generator=make_generator(0))
        model = train_recipe(recipe, ds, ps.x, ps.y, seed=0)
        asr, counted = success_rate(model.classifier, attack, ds.x_test, ds.y_test, ds.spec)
        base, _ = success_rate(clean.classifier, attack, ds.x_test, ds.y_test, ds.spec)
        print(
            f"\n## clean-label 2.5% ({ps.count} target-class rows, labels unchanged, PGD eps {attack.eps}): poisoned "
            f"model clean accuracy {model.card.clean_accuracy:.4f}, attack success rate {asr:.4f} on {counted} "
            f"triggered test images (clean model: {base:.4f}); {time.perf_counter() - t0:.0f} s"
        )
        feats = features_of(model.classifier, ps.x)
        rows = []
        for name in POISON_DETECTORS.names():
            rep = detect_poison(feats, ps.y, detector=name)
            p, r, n = pr(rep.flagged, ps.poisoned)
            rows.append((f"Bastion {name}", p, r, n, 0.0, f"{rep.attacked}"))
        rows.append(confusion_row(model.module, ps.x, ps.y, ds, ps.poisoned, ps.poisoned))
        table("clean-label 2.5%: detection over all training rows", rows)
    if a.part in ("adaptive", "all"):
        # the whole pipeline against the attack built to beat the feature detectors: label errors see what they miss
        t0 = time.perf_counter()
        attack = AdaptiveBlend(target=0, cover=a.cover)
        ps = attack.poison(ds.x_train, ds.y_train, ds.spec, rate=0.05, generator=make_generator(0))
        truth = torch.zeros(ps.x.shape[0], dtype=torch.bool)
        truth[torch.tensor(ps.params["relabelled"])] = True
        model = train_recipe(recipe, ds, ps.x, ps.y, seed=0)
        asr, _ = success_rate(model.classifier, attack, ds.x_test, ds.y_test, ds.spec)
        pds = replace(ds, x_train=ps.x, y_train=ps.y)
        checks = ("schema", "range", "duplicates", "poison", "confusion")
        if a.adaptive_labels:
            checks = (*checks, "label-errors")
        chk = check_dataset(pds, settings=CheckSettings(checks=checks, recipe=recipe), model=model.classifier)
        for f in chk.findings:
            if f.indices:
                got = torch.zeros(ps.x.shape[0], dtype=torch.bool)
                got[torch.tensor(f.indices)] = True
                p, r, n = pr(got, truth)
                print(
                    f"adaptive blend 5%: {f.check} flagged {n}, precision {p:.3f}, recall {r:.3f} of the relabelled rows"
                )
        cleaned = clean_dataset(pds, chk)
        retrained = train_recipe(recipe, ds, cleaned.x, cleaned.y, seed=0)
        asr2, _ = success_rate(retrained.classifier, attack, ds.x_test, ds.y_test, ds.spec)
        removed = torch.zeros(ps.x.shape[0], dtype=torch.bool)
        removed[cleaned.removed_index] = True
        p, r, n = pr(removed, truth)
        drop = clean.card.clean_accuracy - retrained.card.clean_accuracy
        ok = asr2 <= 0.05 and abs(drop) <= 0.01
        print(
            f"\n## the adaptive blend (5% + {a.cover:g}x as many cover rows) through the whole pipeline (checks: {', '.join(checks)}) and "
            f"retraining\nremoved {n} rows ({p:.3f} of them relabelled poison; {r:.3f} of the poison removed); "
            f"retrained model: clean accuracy {retrained.card.clean_accuracy:.4f} (clean-data model "
            f"{clean.card.clean_accuracy:.4f}, difference {drop * 100:+.2f} points), attack success rate {asr2:.4f} "
            f"(before cleaning {asr:.4f}); {time.perf_counter() - t0:.0f} s -> {'MET' if ok else 'NOT MET'}"
        )
    if a.part in ("adaptive-ct", "all"):
        # the attacker who knows confusion training is there: more cover rows make the trigger alone a weaker
        # predictor of the target (what confusion training reads), at the cost of a weaker backdoor
        for cover in (1.0, 2.0, 4.0):
            t0 = time.perf_counter()
            attack = AdaptiveBlend(target=0, cover=cover)
            ps = attack.poison(ds.x_train, ds.y_train, ds.spec, rate=0.05, generator=make_generator(0))
            truth = torch.zeros(ps.x.shape[0], dtype=torch.bool)
            truth[torch.tensor(ps.params["relabelled"])] = True
            model = train_recipe(recipe, ds, ps.x, ps.y, seed=0)
            asr, _ = success_rate(model.classifier, attack, ds.x_test, ds.y_test, ds.spec)
            row = confusion_row(model.module, ps.x, ps.y, ds, truth, ps.poisoned)
            print(
                f"\n## adaptive blend 5% with {cover:g} cover rows per poisoned row: ASR {asr:.4f}, clean accuracy "
                f"{model.card.clean_accuracy:.4f}; confusion training precision {row[1]:.3f}, recall {row[2]:.3f}, "
                f"flagged {row[3]} ({row[5]}); {time.perf_counter() - t0:.0f} s"
            )
    if a.part in ("labels", "all"):
        t0 = time.perf_counter()
        flip = LabelFlip().poison(ds.x_train, ds.y_train, ds.spec, rate=0.10, generator=make_generator(0))
        fds = replace(ds, x_train=flip.x, y_train=flip.y)
        epochs = label_epochs_for(ds.x_train.shape[0], 3, 128)
        found = label_issues(fds, folds=3, seed=0, recipe=Recipe("fmnist-cnn", epochs=epochs))[0]
        got = torch.zeros(flip.x.shape[0], dtype=torch.bool)
        if found.indices:
            got[torch.tensor(found.indices)] = True
        p, r, n = pr(got, flip.poisoned)
        ok = p >= 0.8 and r >= 0.8
        print(
            f"\n## label flipping, 10% at random ({flip.count} labels): confident learning flagged {n}; precision "
            f"{p:.3f}, recall {r:.3f} ({found.details.get('probabilities')}, {time.perf_counter() - t0:.0f} s) -> "
            f"{'MET' if ok else 'NOT MET'}"
        )
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
