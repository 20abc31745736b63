"""The client side of encrypted inference: it makes the CKKS contexts and keys, keeps the secret key, encrypts inputs
and decrypts answers. Only public contexts (no secret key) and ciphertexts ever leave it.

Example::

    client = EncryptedClient(n_features=784, n_outputs=10)
    queries = client.encrypt(x)                       # the packing is chosen from the batch size
    for q in queries:
        server.register(client.public_context(q))    # once per context
    answers = [server.evaluate(q) for q in queries]
    logits = client.decrypt(queries, answers)
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from bastion.defenses.encrypted.linear import Regime, next_pow2
from bastion.defenses.encrypted.params import CkksParameters, choose_parameters
from bastion.errors import ConfigError, InputValidationError


@dataclass(frozen=True)
class EncryptedQuery:
    """Ciphertexts of up to one context's worth of inputs, with what the server needs to evaluate them."""

    regime: Regime
    context_id: str
    n: int  # inputs in this query
    ciphertexts: tuple[bytes, ...]
    seconds: float = 0.0  # the client's encryption time

    @property
    def nbytes(self) -> int:
        return sum(len(c) for c in self.ciphertexts)


@dataclass(frozen=True)
class EncryptedAnswer:
    """The server's result: ciphertexts of the logits, in the query's packing."""

    regime: Regime
    context_id: str
    n: int
    ciphertexts: tuple[bytes, ...]
    seconds: float = 0.0  # the server's compute time

    @property
    def nbytes(self) -> int:
        return sum(len(c) for c in self.ciphertexts)


@dataclass
class _Context:
    params: CkksParameters
    secret: Any  # tenseal.Context with the secret key: never serialized with it
    public: bytes
    id: str


@dataclass
class EncryptedClient:
    """Encrypts inputs for a linear model of ``n_features`` -> ``n_outputs`` and decrypts its logits.

    ``single_max``: up to this many inputs, each is sent in the single-input packing (about 70 ms each for 784 ->
    10); above it, the feature-wise batch packing (a fixed cost of about 1-3 s per ciphertext batch, then nothing
    per input), so the client never pays the batch cost for a handful of inputs nor 70 ms an input for thousands.
    ``integer_bits``: headroom above the scale for the largest logit (|logit| < 2^integer_bits).
    """

    n_features: int
    n_outputs: int
    integer_bits: int = 10
    security: int = 128
    single_max: int = 16
    depth: int = 1  # 1: a linear model; 4: the polynomial MLP (batch packing only)
    _contexts: dict[tuple[Regime, int], _Context] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.n_features < 1 or self.n_outputs < 1:
            raise ConfigError(f"n_features and n_outputs must be positive, got {self.n_features}, {self.n_outputs}")
        if self.single_max < 0:
            raise ConfigError(f"single_max must be >= 0, got {self.single_max}")
        if self.depth < 1:
            raise ConfigError(f"depth must be >= 1, got {self.depth}")
        if self.depth > 1:
            self.single_max = 0  # deeper models run in the batch packing only

    # ---- parameters and contexts
    def single_rows(self, params: CkksParameters) -> int:
        return max(1, min(self.n_outputs, params.slots // next_pow2(self.n_features)))

    def parameters(self, regime: Regime, n: int = 1) -> CkksParameters:
        """The CKKS parameters for ``regime`` (and, for a batch, ``n`` inputs in one ciphertext)."""
        if regime == "batch":
            if self.depth > 1:
                return choose_parameters(self.depth, n, integer_bits=self.integer_bits, security=self.security)
            return choose_parameters(1, n, integer_bits=self.integer_bits, security=self.security, rescale=False)
        padded = next_pow2(self.n_features)
        # two multiplications: by the weight layout, then by ones inside the row sums; as many rows as fit
        return choose_parameters(
            2, min(padded * self.n_outputs, max(padded, 4096)), integer_bits=self.integer_bits, security=self.security
        )

    def _context(self, regime: Regime, n: int) -> _Context:
        import tenseal as ts

        params = self.parameters(regime, n)
        key = (regime, params.poly_modulus_degree)
        if key not in self._contexts:
            ctx = ts.context(
                ts.SCHEME_TYPE.CKKS,
                params.poly_modulus_degree,
                coeff_mod_bit_sizes=list(params.coeff_mod_bit_sizes),
                encryption_type=ts.ENCRYPTION_TYPE.SYMMETRIC,  # the client holds the secret key; half the noise
            )
            ctx.global_scale = 2.0**params.scale_bits
            if regime == "batch" and self.depth == 1:
                ctx.auto_rescale = False  # the products stay at scale^2 (see linear.py)
            elif regime == "single":
                ctx.generate_galois_keys()
            public = ctx.serialize(
                save_public_key=False,
                save_secret_key=False,
                save_galois_keys=regime == "single",
                save_relin_keys=self.depth > 1,  # the MLP's ciphertext-ciphertext products
            )
            self._contexts[key] = _Context(params, ctx, public, hashlib.sha256(public).hexdigest())
        return self._contexts[key]

    def public_context(self, query: EncryptedQuery) -> bytes:
        """The public half of the context ``query`` was encrypted under (no secret key): what the server needs."""
        for c in self._contexts.values():
            if c.id == query.context_id:
                return c.public
        raise ConfigError(f"this client made no context {query.context_id[:12]}…")

    # ---- encrypting and decrypting
    def encrypt(self, x: torch.Tensor) -> list[EncryptedQuery]:
        """Encrypt ``x`` (N inputs; any shape with ``n_features`` values each) in the packing its size calls for."""
        import tenseal as ts

        if not isinstance(x, torch.Tensor) or x.dim() < 2 or x.shape[0] == 0:
            raise InputValidationError("x must be a tensor of N >= 1 inputs (N, ...)")
        flat = x.reshape(x.shape[0], -1).double()
        if flat.shape[1] != self.n_features:
            raise InputValidationError(
                f"inputs have {flat.shape[1]} values each; this client encrypts {self.n_features} (reshape them)"
            )
        if not torch.isfinite(flat).all():
            raise InputValidationError("inputs hold NaN or infinity; CKKS encrypts finite values only")
        arr = flat.numpy()
        queries = []
        if arr.shape[0] <= self.single_max:
            ctx = self._context("single", 1)
            padded = next_pow2(self.n_features)
            rows = self.single_rows(ctx.params)
            groups = -(-self.n_outputs // rows)
            import numpy as np

            for row in arr:
                t0 = time.perf_counter()
                line = np.zeros(padded)
                line[: self.n_features] = row
                cts = []
                for gi in range(groups):
                    r = min(rows, self.n_outputs - gi * rows)
                    cts.append(ts.enc_matmul_encoding(ctx.secret, np.tile(line, (r, 1))).serialize())
                queries.append(EncryptedQuery("single", ctx.id, 1, tuple(cts), time.perf_counter() - t0))
            return queries
        ctx = self._context("batch", min(arr.shape[0], 4096))
        chunk = ctx.params.slots
        for start in range(0, arr.shape[0], chunk):
            part = arr[start : start + chunk]
            t0 = time.perf_counter()
            packed = tuple(ts.ckks_vector(ctx.secret, part[:, j]).serialize() for j in range(self.n_features))
            queries.append(EncryptedQuery("batch", ctx.id, int(part.shape[0]), packed, time.perf_counter() - t0))
        return queries

    def decrypt(self, queries: list[EncryptedQuery], answers: list[EncryptedAnswer]) -> torch.Tensor:
        """The logits (N, n_outputs) of every query, in order."""
        import tenseal as ts

        if len(queries) != len(answers):
            raise InputValidationError(f"{len(queries)} queries but {len(answers)} answers")
        out = []
        for q, a in zip(queries, answers, strict=True):
            if (a.context_id, a.regime, a.n) != (q.context_id, q.regime, q.n):
                raise InputValidationError("an answer does not match its query (context, packing or size)")
            ctx = next(c for c in self._contexts.values() if c.id == q.context_id)
            vecs = [ts.ckks_vector_from(ctx.secret, c).decrypt() for c in a.ciphertexts]
            if q.regime == "batch":
                if len(vecs) != self.n_outputs:
                    raise InputValidationError(f"a batch answer holds {len(vecs)} outputs, not {self.n_outputs}")
                out.append(torch.tensor([v[: q.n] for v in vecs], dtype=torch.float64).T)
            else:
                rows = self.single_rows(ctx.params)
                values = []
                for gi, v in enumerate(vecs):
                    values += v[: min(rows, self.n_outputs - gi * rows)]
                if len(values) != self.n_outputs:
                    raise InputValidationError(f"a single answer holds {len(values)} outputs, not {self.n_outputs}")
                out.append(torch.tensor([values], dtype=torch.float64))
        return torch.cat(out)
