"""CKKS parameters chosen for a computation's depth and width at a security level, by the HE standard's tables.

The Homomorphic Encryption Standard (Albrecht et al., homomorphicencryption.org, 2018; the table SEAL enforces) bounds
the total bit length of the coefficient modulus for each polynomial modulus degree N so that the lattice attacks known
then cost at least 2^λ operations (ternary secret keys, classical attacker). A circuit of multiplicative depth d needs
a chain of d + 2 primes: the base prime (holds the result: scale bits plus the bits of the largest value), one
rescaling prime per multiplication (the scale), and the special prime used for key switching (rotations, relin-
earisation), as large as the base. :func:`choose_parameters` takes the smallest N whose bound fits that chain with a
usable scale and whose N/2 slots hold the packing, and says why in :attr:`CkksParameters.explanation`.
"""

from __future__ import annotations

from dataclasses import dataclass

from bastion.errors import ConfigError

# max log2(q) by N, for 128-, 192- and 256-bit classical security (HE standard, Table 1, ternary secret)
MAX_COEFF_BITS: dict[int, dict[int, int]] = {
    128: {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881},
    192: {1024: 19, 2048: 37, 4096: 75, 8192: 152, 16384: 305, 32768: 611},
    256: {1024: 14, 2048: 29, 4096: 58, 8192: 118, 16384: 237, 32768: 476},
}
MAX_PRIME_BITS = 60  # SEAL's limit on one prime of the chain


@dataclass(frozen=True)
class CkksParameters:
    """One CKKS parameter set: degree, prime chain (bits), scale (bits), and why it was chosen."""

    poly_modulus_degree: int
    coeff_mod_bit_sizes: tuple[int, ...]
    scale_bits: int
    depth: int
    security: int
    explanation: str

    @property
    def slots(self) -> int:
        return self.poly_modulus_degree // 2

    @property
    def total_bits(self) -> int:
        return sum(self.coeff_mod_bit_sizes)

    def to_dict(self) -> dict[str, object]:
        return {
            "poly_modulus_degree": self.poly_modulus_degree,
            "coeff_mod_bit_sizes": list(self.coeff_mod_bit_sizes),
            "scale_bits": self.scale_bits,
            "depth": self.depth,
            "security_bits": self.security,
            "slots": self.slots,
            "explanation": self.explanation,
        }


def choose_parameters(
    depth: int,
    slots: int,
    *,
    integer_bits: int = 10,
    min_scale_bits: int = 25,
    max_scale_bits: int = 40,
    security: int = 128,
    rescale: bool = True,
    poly_degree: int | None = None,
) -> CkksParameters:
    """The smallest CKKS parameters for ``depth`` rescalings over ``slots`` packed values.

    Args:
        depth: multiplications on the longest path (a plaintext-weight layer counts one, a square one).
        slots: values one ciphertext must hold (the packing's width).
        integer_bits: bits above the scale that the largest intermediate value needs (|v| < 2^integer_bits).
        min_scale_bits: the least scale that keeps the result's precision (below it, the next N is taken).
        security: 128, 192 or 256 bits (classical, HE standard).
        rescale: False for one plaintext-weight layer and nothing after it: the product is left at scale^2 in one
            60-bit prime (no rescaling prime, half the work per operation); ``depth`` must then be 1.
        poly_degree: force N (it must still be secure and wide enough); default the smallest that is.
    """
    if rescale is False and depth != 1:
        raise ConfigError("an unrescaled computation has depth 1 (one plaintext-weight layer)")
    if rescale is False:
        return _unrescaled(slots, integer_bits=integer_bits, security=security, poly_degree=poly_degree)
    if security not in MAX_COEFF_BITS:
        raise ConfigError(f"security must be 128, 192 or 256 bits, got {security}")
    if depth < 1:
        raise ConfigError(f"depth must be at least 1 (a model multiplies), got {depth}")
    if slots < 1:
        raise ConfigError(f"slots must be positive, got {slots}")
    if not 0 < integer_bits < 30:
        raise ConfigError(f"integer_bits must be in 1..29, got {integer_bits}")
    table = MAX_COEFF_BITS[security]
    tried = []
    for n in sorted(table):
        if n // 2 < slots:
            tried.append(f"N={n} has {n // 2} slots < {slots}")
            continue
        budget = table[n]
        # 2 * (scale + integer_bits) for the base and special primes, depth * scale for the rescaling primes
        scale = min(max_scale_bits, (budget - 2 * integer_bits) // (depth + 2), MAX_PRIME_BITS - integer_bits)
        if scale < min_scale_bits:
            tried.append(f"N={n} allows a scale of only {max(scale, 0)} bits at depth {depth} (<= {budget} bits)")
            continue
        base = scale + integer_bits
        chain = (base, *([scale] * depth), base)
        why = (
            f"depth {depth} needs {depth + 2} primes (base {base} bits = scale {scale} + {integer_bits} integer bits, "
            f"{depth} x {scale}-bit rescaling, {base}-bit special); {sum(chain)} bits fit N={n} "
            f"(<= {budget} bits for {security}-bit security, HE standard) with {n // 2} slots >= {slots} needed"
        )
        if tried:
            why += "; smaller N ruled out: " + "; ".join(tried)
        return CkksParameters(n, chain, scale, depth, security, why)
    raise ConfigError(
        f"no CKKS parameters up to N=32768 hold depth {depth} over {slots} slots at {security}-bit security: "
        + "; ".join(tried)
        + "; use a shallower model (fewer layers or lower-degree activations)"
    )


def _unrescaled(slots: int, *, integer_bits: int, security: int, poly_degree: int | None) -> CkksParameters:
    """One 60-bit data prime that holds scale^2 * 2^integer_bits, plus a 60-bit special prime."""
    if security not in MAX_COEFF_BITS:
        raise ConfigError(f"security must be 128, 192 or 256 bits, got {security}")
    scale = (MAX_PRIME_BITS - integer_bits) // 2
    table = MAX_COEFF_BITS[security]
    for n in sorted(table):
        if poly_degree is not None and n != poly_degree:
            continue
        # no rotation or relinearisation happens, so the special prime only has to exist: what the budget leaves
        chain = (MAX_PRIME_BITS, min(MAX_PRIME_BITS, table[n] - MAX_PRIME_BITS))
        if n // 2 >= slots and chain[1] >= 20:
            why = (
                f"one plaintext-weight layer, left unrescaled: inputs at scale 2^{scale}, products at 2^{2 * scale} "
                f"with {integer_bits} integer bits in one {MAX_PRIME_BITS}-bit prime (+ a {chain[1]}-bit special "
                f"prime); {sum(chain)} bits fit N={n} (<= {table[n]} bits for {security}-bit security, HE standard) "
                f"with {n // 2} slots >= {slots}"
            )
            return CkksParameters(n, chain, scale, 1, security, why)
    raise ConfigError(
        f"no N{'=' + str(poly_degree) if poly_degree else ''} holds {slots} slots with a 60-bit data prime at "
        f"{security}-bit security; use a smaller batch"
    )
