"""Fingerprints for threat intelligence: Bastion's SimHash scheme against the perceptual hash a team would reach for.

    python bench/intel.py [--threads 2] [--attacked 60] [--datasets digits,fashion-mnist,breast-cancer]

What an imported indicator must do: match an adversarial example when the attacker replays it (as is, with fresh
noise, shifted a pixel, with brightness/contrast jitter, all three) and not match the natural inputs the model
serves. Per data set, one run, side by side:

- **Bastion**: ``bastion-simhash-1`` at 256 bits, crop offsets tried at match time (bastion.monitors.fingerprint);
- **anchor**: ``imagehash.phash`` (the 64-bit DCT perceptual hash, ImageHash 4.3) on the same images; for tabular
  rows, SimHash over raw features (no per-feature scaling), what a generic LSH does.

Attacks: Square (Linf 0.1, 300 queries) on ``--attacked`` test inputs of the zoo model; an indicator is the
fingerprint of the adversarial example (what a gateway that saw the attack holds). Each method's radius is set so
that at most 1 in 10,000 (indicator, natural input) pairs match (natural inputs: the training split and the rest
of the test split), then the replay match rates are read at that radius: TPR at an equal false-positive rate.
Match cost: fingerprinting and matching 1,000 inputs against 1,000 indicators. Figures go to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from typing import Any

import numpy as np
import torch

from bastion import Norm, ThreatModel
from bastion.attacks import Square
from bastion.data import load_dataset
from bastion.models.zoo import train_model
from bastion.monitors.fingerprint import FingerprintScheme, distances
from bastion.monitors.similarity import Blinding

FPR = 1e-4
VARIANTS = {
    "as is": Blinding(noise=0.0, shift=0, brightness=0.0, contrast=0.0, sign=0.0),
    "noise 0.05": Blinding(noise=0.05, shift=0, brightness=0.0, contrast=0.0, sign=0.0),
    "shift 1px": Blinding(noise=0.0, shift=1, brightness=0.0, contrast=0.0, sign=0.0),
    "jitter": Blinding(noise=0.0, shift=0, brightness=0.1, contrast=0.2, sign=0.0),
    "all three": Blinding(noise=0.05, shift=1, brightness=0.1, contrast=0.2, sign=0.0),
}


class Method:
    name: str

    def indicator(self, x: torch.Tensor) -> torch.Tensor: ...
    def distances(self, probe: torch.Tensor, known: torch.Tensor) -> torch.Tensor: ...


class Bastion(Method):
    def __init__(self, scheme: FingerprintScheme) -> None:
        self.scheme = scheme
        self.name = f"bastion-simhash-1 ({scheme.bits} bits)"

    def indicator(self, x: torch.Tensor) -> torch.Tensor:
        return self.scheme.signs(x)

    def distances(self, probe: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
        out = []
        for s in range(0, probe.shape[0], 512):
            out.append(distances(self.scheme.signs(probe[s : s + 512], all_offsets=True), known))
        return torch.cat(out)


class PHash(Method):
    name = "imagehash.phash (64 bits)"

    def indicator(self, x: torch.Tensor) -> torch.Tensor:
        import imagehash
        from PIL import Image

        imgs = (x.reshape(x.shape[0], *x.shape[-2:]).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        bits = [imagehash.phash(Image.fromarray(im)).hash.flatten() for im in imgs]
        return torch.from_numpy(np.stack(bits)).float() * 2 - 1

    def distances(self, probe: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
        return distances(self.indicator(probe)[:, None, :], known)


class RawSimHash(Method):
    """SimHash over raw features: what a generic locality-sensitive hash does with a tabular row."""

    def __init__(self, d: int, bits: int = 256) -> None:
        self.name = f"simhash over raw features ({bits} bits)"
        self.scheme = FingerprintScheme((d,), bits, center=(0.0,) * d, scale=(1.0,) * d)

    def indicator(self, x: torch.Tensor) -> torch.Tensor:
        return self.scheme.signs(x)

    def distances(self, probe: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
        return distances(self.scheme.signs(probe, all_offsets=True), known)


def run(name: str, args: argparse.Namespace) -> None:
    data = load_dataset(name)
    lo, hi = data.spec.bounds
    t0 = time.perf_counter()
    model = train_model(data, epochs=5 if name == "fashion-mnist" else 15, seed=0)
    n = args.attacked
    x, y = data.x_test[:n], data.y_test[:n]
    g = torch.Generator().manual_seed(0)
    adv = Square(ThreatModel(Norm.LINF, 0.1), max_queries=300).run(model.classifier, x, y, generator=g).x_adv
    image = len(data.spec.input_shape) == 3
    unit = None if image else data.x_train.std(0)
    replays = {v: b.apply(adv, (lo, hi), torch.Generator().manual_seed(1), unit=unit) for v, b in VARIANTS.items()}
    natural = torch.cat([data.x_train, data.x_test[n:]])[: args.natural]
    compare(name, data.x_train, adv, replays, natural, image, f"setup {time.perf_counter() - t0:.0f} s")
    group, scheme = deployed(data.x_train, adv, replays, data.x_test[n:])
    if image:
        adaptive(model.classifier, scheme, group, x, y, adv)
    if name == "breast-cancer":  # the same rows in the units scikit-learn ships them in, as a user's own data comes
        from sklearn.datasets import load_breast_cancer

        raw = torch.as_tensor(load_breast_cancer().data, dtype=torch.float32)
        lo_f, span = raw.min(0).values, raw.max(0).values - raw.min(0).values

        def units(t: torch.Tensor) -> torch.Tensor:
            return t * span + lo_f

        replays_raw = {v: units(r) for v, r in replays.items()}
        title = "breast-cancer in raw units (area ~500, smoothness ~0.1)"
        compare(title, units(data.x_train), units(adv), replays_raw, units(natural), False, "the same attacks")


def deployed(
    train: torch.Tensor, adv: torch.Tensor, replays: dict[str, torch.Tensor], held_out: torch.Tensor
) -> tuple[Any, FingerprintScheme]:
    """What a gateway does with the indicators: the known_inputs monitor as the gateway builds it (default settings:
    radius at most 16 of 256 bits, each indicator narrowed to stay 3 bits clear of the 12,000 clean training inputs
    the gateway calibrates on); its false matches counted on test inputs it never saw (per indicator and input, and
    per input against all the indicators at once)."""
    from bastion.monitors import MONITORS
    from bastion.monitors.known_inputs import KnownInput, KnownInputsMonitor

    kind = MONITORS.get("known_inputs")
    clean = train[:12_000]
    monitor = kind.build(kind.settings(), clean, torch.zeros(clean.shape[0], 1))
    assert isinstance(monitor, KnownInputsMonitor) and monitor.scheme is not None
    scheme = monitor.scheme
    known = [KnownInput(f"i{j}", scheme, fp, 16) for j, fp in enumerate(scheme.fingerprints(adv))]
    summary = monitor.set_indicators(known)
    (group,) = monitor._groups
    keep = torch.tensor([int(r.ref[1:]) for r in group.refs])
    radii = group.radii
    nat = distances(scheme.signs(held_out, all_offsets=True), group.signs) <= radii[None, :]
    rates = []
    for v in VARIANTS:
        d = distances(scheme.signs(replays[v][keep], all_offsets=True), group.signs).diagonal()
        rates.append(float((d <= radii).float().mean()) * len(keep) / adv.shape[0])
    print(
        f"| bastion as deployed: radius 16, narrowed against {clean.shape[0]:,} clean inputs ({summary['narrowed']} narrowed, "
        f"{summary['dropped']} dropped); false matches on {held_out.shape[0]:,} unseen test inputs: "
        f"{float(nat.float().mean()):.1e} per pair, {float(nat.any(1).float().mean()):.1e} per input against all "
        f"{len(keep)} | {int(radii.float().median())} (median) | " + " | ".join(f"{r:.2f}" for r in rates) + " | |"
    )
    return group, scheme


def _shift_exactly(x: torch.Tensor, s: int, g: torch.Generator, fill: float) -> torch.Tensor:
    """Each image moved by s pixels along both axes, in a random diagonal direction; uncovered pixels ``fill``."""
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (s, s, s, s), value=fill)
    signs = torch.randint(0, 2, (n, 2), generator=g) * 2 - 1
    return torch.stack(
        [
            padded[i, :, s + dy * s : s + dy * s + h, s + dx * s : s + dx * s + w]
            for i, (dy, dx) in enumerate(signs.tolist())
        ]
    )


def adaptive(
    model: Any, scheme: FingerprintScheme, group: Any, x: torch.Tensor, y: torch.Tensor, adv: torch.Tensor
) -> None:
    """An attacker who knows the indicators are there and how they are made: it shifts past the crop margin, adds
    more noise, or runs the attack afresh. Per variant: how often the deployed monitor still matches, how often the
    variant is still adversarial, and how often both evade and stay adversarial (the attacker's success)."""
    keep = torch.tensor([int(r.ref[1:]) for r in group.refs])
    g = torch.Generator().manual_seed(2)
    lo = 0.0
    with torch.no_grad():
        was = model.predict_logits(adv[keep]).argmax(1) != y[keep]
    fresh = (
        Square(ThreatModel(Norm.LINF, 0.1), max_queries=300)
        .run(model, x, y, generator=torch.Generator().manual_seed(7))
        .x_adv
    )
    variants = {
        f"shift {scheme.margin + 1} px (past the crop margin)": _shift_exactly(adv, scheme.margin + 1, g, lo),
        "noise sigma 0.1": (adv + 0.1 * torch.randn(adv.shape, generator=g)).clamp(0, 1),
        "noise sigma 0.2": (adv + 0.2 * torch.randn(adv.shape, generator=g)).clamp(0, 1),
        "a fresh Square run (another seed)": fresh,
    }
    print(
        f"\nadaptive replays of the {int(was.sum())} adversarial examples behind the active indicators "
        "(the attacker knows the scheme):"
    )
    print("| variant | matched | still adversarial | evades and still adversarial |")
    print("|---|---|---|---|")
    for name, v in variants.items():
        v = v[keep]
        d = distances(scheme.signs(v, all_offsets=True), group.signs).diagonal()
        matched = d <= group.radii
        with torch.no_grad():
            still = model.predict_logits(v).argmax(1) != y[keep]
        base = was.float().sum().clamp_min(1)
        print(
            f"| {name} | {float(matched[was].float().sum() / base):.2f} | {float(still[was].float().sum() / base):.2f} "
            f"| {float((still & ~matched)[was].float().sum() / base):.2f} |"
        )


def compare(
    title: str,
    train: torch.Tensor,
    adv: torch.Tensor,
    replays: dict[str, torch.Tensor],
    natural: torch.Tensor,
    image: bool,
    note: str,
) -> None:
    """Both methods on one set of adversarial examples, replays and natural inputs, at an equal pair FPR."""
    shape = tuple(adv.shape[1:])
    bastion = Bastion(FingerprintScheme.for_inputs(shape, train.reshape(train.shape[0], -1)))
    anchor: Method = PHash() if image else RawSimHash(int(np.prod(shape)))
    print(
        f"\n## {title}: {adv.shape[0]} Square adversarial examples (Linf 0.1), {natural.shape[0]:,} natural inputs ({note})"
    )
    print(
        f"| method | radius at pair FPR <= {FPR:g} | "
        + " | ".join(VARIANTS)
        + " | ms per 1,000 inputs x 1,000 indicators |"
    )
    print("|---|---|" + "---|" * (len(VARIANTS) + 1))
    for method in (bastion, anchor):
        known = method.indicator(adv)
        nat = method.distances(natural, known).flatten().float()
        radius = -1
        for r in range(0, known.shape[1] // 2):
            if float((nat <= r).float().mean()) > FPR:
                break
            radius = r
        rates = []
        for v in VARIANTS:
            d = method.distances(replays[v], known).diagonal()
            rates.append(float((d <= radius).float().mean()))
        probe = natural[:1000]
        many = known.repeat(1000 // known.shape[0] + 1, 1)[:1000]
        t1 = time.perf_counter()
        method.distances(probe, many)
        ms = (time.perf_counter() - t1) * 1000
        print(f"| {method.name} | {radius} | " + " | ".join(f"{r:.2f}" for r in rates) + f" | {ms:.0f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--attacked", type=int, default=60)
    ap.add_argument("--natural", type=int, default=20_000)
    ap.add_argument("--datasets", default="digits,fashion-mnist,breast-cancer")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"# bench/intel.py, {time.strftime('%Y-%m-%d %H:%M')} UTC\n"
        f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, python "
        f"{sys.version.split()[0]}, torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.2f}"
    )
    for name in args.datasets.split(","):
        run(name.strip(), args)


if __name__ == "__main__":
    main()
