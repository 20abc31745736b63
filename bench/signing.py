"""Hashing and signing throughput for a 1 GB model file (issue 13): so signing never becomes the slow step of a release.

    python bench/signing.py [--size-mb 1024] [--repeats 3] [--dir /tmp]

One run, side by side, on the same file (a safetensors file of random float32 weights, written once and read from the
page cache afterwards, so the figures are hashing and signing, not the disk):

- anchor: a plain sha256 of the file with hashlib (1 MiB reads);
- model-signing's own hashing (file-level sha256; and its sharded mode, which hashes 1 GB shards in parallel);
- model-signing's signing (hash + ECDSA P-256 signature into a Sigstore bundle) and verification;
- Bastion: `registry add` (copy into the registry, digest every file, write the manifest, sign) and `registry verify`
  (Bastion's digests, handed to model-signing's verification: every byte is hashed once).

Each row prints the best of --repeats, its GB/s and its ratio to the plain sha256. Copy the output into
bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


def best(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def plain_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    args = ap.parse_args()

    import model_signing
    import torch
    from safetensors.torch import save_file

    from bastion.registry import Registry, SigningKey, TrustPolicy, generate_keypair
    from bastion.registry.signing import sign, verify

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    work = Path(tempfile.mkdtemp(prefix="bench-signing-", dir=args.dir))
    try:
        model = work / "model"
        model.mkdir()
        n = args.size_mb * (1 << 20) // 4
        g = torch.Generator().manual_seed(0)
        save_file({"weight": torch.rand(n, generator=g)}, str(model / "weights.safetensors"))
        f = model / "weights.safetensors"
        size = f.stat().st_size
        plain_sha256(f)  # into the page cache
        generate_keypair(work / "k.key", work / "k.pub")
        key, trust = SigningKey(work / "k.key"), TrustPolicy.from_keys([work / "k.pub"])
        print(
            f"# {platform.node()} | {platform.processor() or platform.machine()} | {os.cpu_count()} cores | "
            f"torch threads {torch.get_num_threads()} | model-signing {model_signing.__version__} | "
            f"file {size / 1e9:.3f} GB (page cache) | best of {args.repeats}"
        )
        rows: list[tuple[str, float]] = []
        base = best(lambda: plain_sha256(f), args.repeats)
        rows.append(("plain sha256 (hashlib, anchor)", base))
        rows.append(
            (
                "model-signing hash (files, sha256)",
                best(lambda: model_signing.hashing.Config().use_file_serialization().hash(model), args.repeats),
            )
        )
        rows.append(
            (
                "model-signing hash (1 GB shards, sha256, parallel)",
                best(lambda: model_signing.hashing.Config().use_shard_serialization().hash(model), args.repeats),
            )
        )
        rows.append(
            (
                "model-signing hash (files, blake3)",
                best(
                    lambda: (
                        model_signing.hashing.Config().use_file_serialization(hashing_algorithm="blake3").hash(model)
                    ),
                    args.repeats,
                ),
            )
        )
        sig = work / "model.sig"
        rows.append(("model-signing sign (hash + ECDSA P-256)", best(lambda: sign(model, sig, key), args.repeats)))
        rows.append(("model-signing verify", best(lambda: verify(model, sig, trust), args.repeats)))

        def add() -> None:
            root = work / "registry"
            if root.exists():
                shutil.rmtree(root)
            reg = Registry.init(root)
            reg.add_model(f, sign_with=key, name="big")  # bare safetensors: registered, loaded later with an arch
            reg.close()

        rows.append(("Bastion registry add (copy + digest + manifest + sign)", best(add, args.repeats)))
        reg = Registry.open(work / "registry")
        check = reg.verify("big", trust)
        assert check.ok, check.problems
        rows.append(
            (
                "Bastion registry verify (digest once + model-signing verify)",
                best(lambda: reg.verify("big", trust), args.repeats),
            )
        )
        reg.close()
        print(f"{'step':58s} {'seconds':>8s} {'GB/s':>6s} {'x plain sha256':>15s}")
        for name, t in rows:
            print(f"{name:58s} {t:8.2f} {size / t / 1e9:6.2f} {t / base:15.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
