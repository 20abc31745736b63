"""Encrypted inference of a Fashion-MNIST logistic regression (issue 14): Bastion's two packings next to the plain
TenSEAL patterns the issue measured, in one run.

    python bench/encrypted.py [--part lr|mlp|all] [--single 20] [--threads 2] [--hidden 16]

The model: 784 -> 10 logistic regression trained by Bastion on the 60,000 training images (torch, Adam, 5 epochs).
Every row is end to end as a client sees it: encryption, the server's compute, decryption (context and key
creation and the server's registration of the public context are reported apart: once per client).

- anchor "batch": feature-wise packing in a plain Python loop over TenSEAL's CKKSVector (N=8192, [60, 40, 60],
  scale 2^40, auto-rescale, public-key encryption) for 4,096 images;
- anchor "single": TenSEAL's one-image-a-vector ``matmul`` (vector x matrix) at the same parameters;
- Bastion batch: the full 10,000-image test set in ciphertext batches of 4,096 (the client's choice for > 16);
- Bastion single: --single images one at a time (the client's choice for <= 16), median latency.

Targets: <= 1 ms an image amortised over full batches, <= 150 ms for a single image, the plaintext's label on
>= 99.9% of the test set.

--part mlp: a 784 -> hidden -> 10 MLP with the square activation (PolyActivation) trained by Bastion (Adam, 5
epochs), encrypted in the batch packing at depth 4, for batches of 256, 1,024 and 4,096 test images: accuracy against
its plaintext version (target: within 1 point), latency and ciphertext sizes per batch size.
Copy the output into bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
import torch


def train_lr(x: torch.Tensor, y: torch.Tensor, epochs: int = 5) -> torch.nn.Linear:
    torch.manual_seed(0)
    lin = torch.nn.Linear(x.shape[1], 10)
    opt = torch.optim.Adam(lin.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for idx in torch.randperm(x.shape[0], generator=g).split(256):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(lin(x[idx]), y[idx]).backward()
            opt.step()
    return lin


def anchor_batch(w: np.ndarray, b: np.ndarray, x: np.ndarray) -> tuple[float, float, float, np.ndarray]:
    import tenseal as ts

    ctx = ts.context(ts.SCHEME_TYPE.CKKS, 8192, coeff_mod_bit_sizes=[60, 40, 60])
    ctx.global_scale = 2.0**40
    t0 = time.perf_counter()
    cols = [ts.ckks_vector(ctx, x[:, j]) for j in range(x.shape[1])]
    t1 = time.perf_counter()
    outs = []
    for k in range(w.shape[0]):
        acc = cols[0] * float(w[k, 0])
        for j in range(1, x.shape[1]):
            acc += cols[j] * float(w[k, j])
        outs.append(acc + float(b[k]))
    t2 = time.perf_counter()
    dec = np.array([o.decrypt() for o in outs]).T
    t3 = time.perf_counter()
    return t1 - t0, t2 - t1, t3 - t2, dec


def anchor_single(w: np.ndarray, b: np.ndarray, x: np.ndarray) -> tuple[float, np.ndarray]:
    import tenseal as ts

    ctx = ts.context(ts.SCHEME_TYPE.CKKS, 8192, coeff_mod_bit_sizes=[60, 40, 60])
    ctx.global_scale = 2.0**40
    ctx.generate_galois_keys()
    times, outs = [], []
    for row in x:
        t0 = time.perf_counter()
        v = ts.ckks_vector(ctx, row)
        r = v.matmul(w.T.tolist()) + b.tolist()
        outs.append(r.decrypt()[: w.shape[0]])
        times.append(time.perf_counter() - t0)
    return statistics.median(times), np.array(outs)


def mlp_part(hidden: int) -> None:
    import tenseal as ts

    from bastion.data import load_dataset
    from bastion.defenses.encrypted import EncryptedClient, EncryptedMLPServer, PolyActivation, convert_mlp

    data = load_dataset("fashion-mnist")
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(784, hidden), PolyActivation(), torch.nn.Linear(hidden, 10)
    )
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    t = time.perf_counter()
    for _ in range(5):
        for idx in torch.randperm(data.x_train.shape[0], generator=g).split(256):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(data.x_train[idx]), data.y_train[idx]).backward()
            opt.step()
    trained = time.perf_counter() - t
    weights = convert_mlp(net.eval())
    plain = weights.plaintext(data.x_test)
    acc = float((plain.argmax(1) == data.y_test).float().mean())
    print(
        f"# {platform.node()} | {os.cpu_count()} cores | torch threads {torch.get_num_threads()} | TenSEAL "
        f"{ts.__version__} | MLP 784-{hidden}-10, square activation, trained in {trained:.1f} s, plaintext test "
        f"accuracy {acc:.4f}"
    )
    server = EncryptedMLPServer(weights, max_query_bytes=1 << 31)  # depth-4 ciphertexts: ~0.4 MB each
    client = EncryptedClient(784, 10, depth=4)
    print(
        f"{'batch':>6s} {'enc s':>7s} {'server s':>8s} {'dec s':>6s} {'ms/image':>9s} {'MB up':>7s} {'MB down':>8s} "
        f"{'enc acc':>8s} {'plain acc':>9s} {'same label':>10s} {'max err':>8s}"
    )
    for n in (256, 1024, 4096):
        x, y = data.x_test[:n], data.y_test[:n]
        (q,) = client.encrypt(x)
        server.register(client.public_context(q))
        a = server.evaluate(q)
        t = time.perf_counter()
        out = client.decrypt([q], [a])
        dec = time.perf_counter() - t
        enc_acc = float((out.argmax(1) == y).float().mean())
        p_acc = float((plain[:n].argmax(1) == y).float().mean())
        same = float((out.argmax(1) == plain[:n].argmax(1)).float().mean())
        print(
            f"{n:6d} {q.seconds:7.2f} {a.seconds:8.2f} {dec:6.3f} {(q.seconds + a.seconds + dec) / n * 1e3:9.2f} "
            f"{q.nbytes / 1e6:7.1f} {a.nbytes / 1e6:8.2f} {enc_acc:8.4f} {p_acc:9.4f} {same:10.4f} "
            f"{float((out - plain[:n]).abs().max()):8.2e}"
        )
    print(f"parameters: {client.parameters('batch', 4096).explanation}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["lr", "mlp", "all"], default="all")
    ap.add_argument("--single", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=16)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.part in ("lr", "all"):
        lr_part(args.single)
    if args.part in ("mlp", "all"):
        mlp_part(args.hidden)


def lr_part(single: int) -> None:

    import tenseal as ts

    from bastion.data import load_dataset
    from bastion.defenses.encrypted import EncryptedClient, EncryptedLinearServer, LinearWeights

    data = load_dataset("fashion-mnist")
    xtr, xte = data.x_train.reshape(data.x_train.shape[0], -1), data.x_test.reshape(data.x_test.shape[0], -1)
    t = time.perf_counter()
    lin = train_lr(xtr, data.y_train)
    trained = time.perf_counter() - t
    w = lin.weight.detach().double().numpy()
    b = lin.bias.detach().double().numpy()
    weights = LinearWeights(w, b)
    plain = weights.plaintext(xte)
    acc = float((plain.argmax(1) == data.y_test).float().mean())
    print(
        f"# {platform.node()} | {platform.machine()} | {os.cpu_count()} cores | torch threads {torch.get_num_threads()} "
        f"| TenSEAL {ts.__version__} | logistic regression 784->10 trained in {trained:.1f} s, plaintext test "
        f"accuracy {acc:.4f}"
    )
    rows = []

    # --- anchors
    xb = xte[:4096].double().numpy()
    te, tc, td, dec = anchor_batch(w, b, xb)
    agree = float((dec.argmax(1) == plain[:4096].argmax(1).numpy()).mean())
    rows.append(("anchor batch: feature-wise loop, TenSEAL defaults (4,096)", (te + tc + td) / 4096, te, tc, td, agree))
    med, outs = anchor_single(w, b, xte[:single].double().numpy())
    agree = float((outs.argmax(1) == plain[:single].argmax(1).numpy()).mean())
    rows.append((f"anchor single: TenSEAL matmul, one image a vector ({single})", med, 0.0, med, 0.0, agree))

    # --- Bastion
    server = EncryptedLinearServer(weights)
    client = EncryptedClient(784, 10)
    t = time.perf_counter()
    queries = client.encrypt(xte)
    setup_reg = time.perf_counter()
    for q in {q.context_id: q for q in queries}.values():
        server.register(client.public_context(q))
    reg = time.perf_counter() - setup_reg
    answers = [server.evaluate(q) for q in queries]
    t_dec = time.perf_counter()
    logits = client.decrypt(queries, answers)
    dec_s = time.perf_counter() - t_dec
    enc_s = sum(q.seconds for q in queries)
    comp_s = sum(a.seconds for a in answers)
    agree_all = float((logits.argmax(1) == plain.argmax(1)).float().mean())
    full = [i for i, q in enumerate(queries) if q.n == 4096]
    fe = sum(queries[i].seconds for i in full)
    fc = sum(answers[i].seconds for i in full)
    n_full = 4096 * len(full)
    rows.append(
        (
            f"Bastion batch, full ciphertext batches ({n_full:,})",
            (fe + fc + dec_s * n_full / 10000) / n_full,
            fe,
            fc,
            dec_s,
            agree_all,
        )
    )
    rows.append(
        (
            f"Bastion batch, whole test set ({len(queries)} queries, 10,000)",
            (enc_s + comp_s + dec_s) / 10000,
            enc_s,
            comp_s,
            dec_s,
            agree_all,
        )
    )
    qbytes = queries[0].nbytes
    abytes = answers[0].nbytes
    # single
    first = client.encrypt(xte[:1])
    server.register(client.public_context(first[0]))
    lat, outs_s = [], []
    for i in range(single):
        t0 = time.perf_counter()
        (q,) = client.encrypt(xte[i : i + 1])
        a = server.evaluate(q)
        outs_s.append(client.decrypt([q], [a]))
        lat.append(time.perf_counter() - t0)
    s_logits = torch.cat(outs_s)
    agree_s = float((s_logits.argmax(1) == plain[:single].argmax(1)).float().mean())
    med_s = statistics.median(lat)
    rows.append((f"Bastion single, one image at a time ({single}, median)", med_s, 0.0, med_s, 0.0, agree_s))

    print(f"{'row':62s} {'ms/image':>9s} {'enc s':>7s} {'server s':>8s} {'dec s':>6s} {'same label':>10s}")
    for name, per, e, c, d, ag in rows:
        print(f"{name:62s} {per * 1e3:9.3f} {e:7.2f} {c:8.2f} {d:6.3f} {ag:10.4f}")
    print(
        f"Bastion batch vs anchor batch: {rows[2][1] / rows[0][1]:.2f}x the time an image; "
        f"single vs anchor single: {rows[4][1] / rows[1][1]:.2f}x"
    )
    print(
        f"max |logit error| over the test set: {float((logits - plain).abs().max()):.2e}; "
        f"batch query {qbytes / 1e6:.1f} MB up, {abytes / 1e6:.2f} MB down; single query "
        f"{first[0].nbytes / 1e6:.2f} MB; registering the public contexts took {reg:.2f} s"
    )
    for q in {q.context_id: q for q in [*queries, first[0]]}.values():
        p = client.parameters(q.regime, 4096 if q.regime == "batch" else 1)
        print(f"{q.regime}: {p.explanation}")


if __name__ == "__main__":
    main()
