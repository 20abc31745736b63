"""The server side of encrypted inference: a linear model's plaintext weights applied to ciphertexts it cannot read.

The server holds only public contexts (the client's evaluation keys, never a secret key: :meth:`register` refuses a
context that carries one). It checks every query before computing: a registered context, the right number and size
of ciphertexts for the packing, ciphertexts that deserialize under that context's parameters, a total size under
its limit, and a model whose largest logit fits the context's integer headroom.

What it cannot check: a ciphertext made under another key with the *same* parameters deserializes fine and yields an
answer only that other key decrypts (to noise) — this is the nature of the scheme, not a gap in the checks.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from dataclasses import dataclass
from typing import Any

from bastion.defenses.encrypted.client import EncryptedAnswer, EncryptedQuery
from bastion.defenses.encrypted.linear import LinearWeights, batch_bias_terms, next_pow2, single_layout
from bastion.defenses.encrypted.params import MAX_COEFF_BITS
from bastion.errors import InputValidationError

DEFAULT_MAX_QUERY_BYTES = 256 << 20  # a full 4,096-input batch of 784 features is about 100 MB


@dataclass
class _Registered:
    context: Any
    poly_degree: int
    galois: bool
    headroom: int  # bits a result may take above its scale before it wraps around the modulus


class EncryptedLinearServer:
    """Evaluates ``W x + b`` on encrypted queries (see :mod:`bastion.defenses.encrypted.linear` for the packings)."""

    def __init__(
        self,
        weights: LinearWeights,
        *,
        bounds: tuple[float, float] = (0.0, 1.0),
        max_query_bytes: int = DEFAULT_MAX_QUERY_BYTES,
        security: int = 128,
    ) -> None:
        self.weights = weights
        self.bounds = bounds
        self.max_query_bytes = max_query_bytes
        self.security = security
        # a sound bound on the logits' size: a context without that much headroom is refused at registration
        self.integer_bits: int | None = weights.integer_bits(bounds)
        self._contexts: dict[str, _Registered] = {}
        self._bias = batch_bias_terms(weights)
        self._lock = threading.Lock()

    def register(self, public_context: bytes) -> str:
        """Accept a client's public context; returns its id (sha256). A context holding a secret key is refused."""
        import tenseal as ts

        if not isinstance(public_context, (bytes, bytearray)) or not public_context:
            raise InputValidationError("a context must be the bytes of a serialized TenSEAL context")
        try:
            ctx = ts.context_from(bytes(public_context))
        except Exception as e:  # TenSEAL raises several kinds on malformed bytes
            raise InputValidationError(f"the context could not be read: {type(e).__name__}: {e}") from None
        if ctx.is_private():
            raise InputValidationError(
                "the context holds a secret key; send only its public part (serialize(save_secret_key=False)): a "
                "server that holds the key could read every input"
            )
        seal = ctx.data.seal_context()
        if not seal.parameters_set():
            raise InputValidationError(f"the context's parameters are not valid: {seal.parameters_error_message()}")
        key_data = seal.key_context_data()
        n = int(key_data.parms().poly_modulus_degree())
        bits = int(key_data.total_coeff_modulus_bit_count())
        limit = MAX_COEFF_BITS[self.security].get(n)
        if limit is None or bits > limit:
            raise InputValidationError(
                f"the context's parameters (N={n}, {bits}-bit modulus) are below {self.security}-bit security"
            )
        scale = round(math.log2(ctx.global_scale))
        if ctx.auto_rescale:  # products are rescaled down to the last prime, which must hold value * scale
            headroom = int(seal.last_context_data().total_coeff_modulus_bit_count()) - scale
        else:  # one unrescaled product: value * scale^2 in the data primes
            headroom = int(seal.first_context_data().total_coeff_modulus_bit_count()) - 2 * scale
        if self.integer_bits is not None and headroom < self.integer_bits:
            raise InputValidationError(
                f"this model's logits can reach 2^{self.integer_bits} for inputs in {self.bounds}, but the context "
                f"leaves {headroom} bits above its scale, so results would wrap around silently; make the context "
                f"with integer_bits >= {self.integer_bits}"
            )
        cid = hashlib.sha256(bytes(public_context)).hexdigest()
        with self._lock:
            self._contexts[cid] = _Registered(ctx, n, ctx.has_galois_keys(), headroom)
        return cid

    def _load(self, reg: _Registered, blob: bytes, what: str) -> Any:
        import tenseal as ts

        try:
            return ts.ckks_vector_from(reg.context, blob)
        except Exception as e:  # a ciphertext from other parameters, or not a ciphertext at all
            raise InputValidationError(
                f"{what} is not a ciphertext of the registered context (other parameters, or malformed): "
                f"{type(e).__name__}"
            ) from None

    def evaluate(self, query: EncryptedQuery) -> EncryptedAnswer:
        """The encrypted logits of ``query``."""
        reg = self._contexts.get(query.context_id)
        if reg is None:
            raise InputValidationError(f"context {query.context_id[:12]}… is not registered; register it first")
        if query.nbytes > self.max_query_bytes:
            raise InputValidationError(
                f"the query holds {query.nbytes:,} bytes of ciphertext; the limit is {self.max_query_bytes:,} "
                "(send fewer inputs per query)"
            )
        t0 = time.perf_counter()
        if query.regime == "batch":
            out = self._batch(reg, query)
        elif query.regime == "single":
            out = self._single(reg, query)
        else:
            raise InputValidationError(f"unknown packing {query.regime!r}; use batch or single")
        return EncryptedAnswer(
            query.regime, query.context_id, query.n, tuple(c.serialize() for c in out), time.perf_counter() - t0
        )

    def _inputs(self, reg: _Registered, query: EncryptedQuery) -> list[Any]:
        """The batch query's ciphertexts, one per feature, each holding ``query.n`` inputs (checked)."""
        w = self.weights
        if len(query.ciphertexts) != w.n_features:
            raise InputValidationError(
                f"a batch query holds one ciphertext per feature: {w.n_features}, got {len(query.ciphertexts)}"
            )
        if not 1 <= query.n <= reg.poly_degree // 2:
            raise InputValidationError(f"a batch holds 1..{reg.poly_degree // 2} inputs, got {query.n}")
        cts = [self._load(reg, c, f"ciphertext {j}") for j, c in enumerate(query.ciphertexts)]
        sizes = {c.size() for c in cts}
        if sizes != {query.n}:
            raise InputValidationError(f"every ciphertext must hold {query.n} inputs; they hold {sorted(sizes)}")
        return cts

    def _batch(self, reg: _Registered, query: EncryptedQuery) -> list[Any]:
        w = self.weights
        cts = self._inputs(reg, query)
        outs = []
        for k in range(w.n_outputs):
            row = w.weight[k]
            j_bias, shift, wj = self._bias[k]
            if j_bias < 0 and shift != 0.0:  # an all-zero row: (x_0 + 1) b - x_0 b = b
                acc = (cts[0] + 1.0) * shift
                acc.add_(cts[0] * (-shift))
            elif j_bias < 0:  # an all-zero row and no bias: 2^-20 x_0, below CKKS's own error here (a zero
                acc = cts[0] * 2.0**-20  # plaintext would make SEAL refuse the transparent product)
            else:
                acc = (cts[j_bias] + shift) * wj
            for j in range(w.n_features):
                if j != j_bias and row[j] != 0.0:
                    acc.add_(cts[j] * float(row[j]))
            outs.append(acc)
        return outs

    def _single(self, reg: _Registered, query: EncryptedQuery) -> list[Any]:
        w = self.weights
        if not reg.galois:
            raise InputValidationError("the single-input packing needs rotation (Galois) keys in the context")
        padded = next_pow2(w.n_features)
        rows = max(1, min(w.n_outputs, (reg.poly_degree // 2) // padded))
        groups = single_layout(w, rows, padded)
        if query.n != 1 or len(query.ciphertexts) != len(groups):
            raise InputValidationError(
                f"a single query holds one input in {len(groups)} ciphertexts, got {query.n} input(s) in "
                f"{len(query.ciphertexts)}"
            )
        ones = [1.0] * padded
        outs = []
        for gi, ((idx, layout, bias), blob) in enumerate(zip(groups, query.ciphertexts, strict=True)):
            ct = self._load(reg, blob, f"ciphertext {gi}")
            if ct.size() != len(idx) * padded:
                raise InputValidationError(
                    f"ciphertext {gi} holds {ct.size()} values; the packing expects {len(idx)} x {padded}"
                )
            outs.append((ct * layout).enc_matmul_plain(ones, len(idx)) + bias)
        return outs

    @property
    def contexts(self) -> int:
        return len(self._contexts)


class EncryptedMLPServer(EncryptedLinearServer):
    """Evaluates ``W2 p(W1 x + b1) + b2`` (:mod:`bastion.defenses.encrypted.mlp`) in the batch packing."""

    def __init__(
        self,
        weights: Any,
        *,
        bounds: tuple[float, float] = (0.0, 1.0),
        max_query_bytes: int = DEFAULT_MAX_QUERY_BYTES,
        security: int = 128,
    ) -> None:
        self.mlp = weights
        first = LinearWeights(weights.w1, weights.b1)  # layer 1 is checked and evaluated as a linear model
        super().__init__(first, bounds=bounds, max_query_bytes=max_query_bytes, security=security)
        # the worst-case bound through a square is far above what trained MLPs reach (2^14 for a Fashion-MNIST MLP
        # whose logits stay under 2^7), so it would refuse every useful context: the MLP is not checked
        self.integer_bits = None

    def _single(self, reg: _Registered, query: EncryptedQuery) -> list[Any]:
        raise InputValidationError("the polynomial MLP is served in the batch packing only; encrypt with depth=4")

    def _batch(self, reg: _Registered, query: EncryptedQuery) -> list[Any]:
        cts = self._inputs(reg, query)
        m = self.mlp
        a, b, c = m.poly
        hidden = []
        for i in range(m.hidden):
            h = _weighted_sum(cts, m.w1[i], f"hidden unit {i}") + float(m.b1[i])
            hidden.append((h * a + b) * h + c)  # (a h + b) h + c: two levels
        return [_weighted_sum(hidden, m.w2[k], f"output {k}") + float(m.b2[k]) for k in range(m.n_outputs)]


def _weighted_sum(cts: list[Any], weights: Any, what: str) -> Any:
    """sum_j w_j ct_j over the nonzero weights (a zero plaintext would make SEAL refuse the product)."""
    acc = None
    for ct, w in zip(cts, weights, strict=True):
        if float(w) != 0.0:
            term = ct * float(w)
            acc = term if acc is None else acc + term
    if acc is None:
        raise InputValidationError(f"{what} has no nonzero weight; the model is degenerate")
    return acc
