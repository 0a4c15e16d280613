"""t-of-n Shamir secret sharing of 32-byte secrets over the prime field GF(2^521 - 1)."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from functools import lru_cache

PRIME = 2**521 - 1  # a Mersenne prime, larger than any 32-byte secret
SHARE_BYTES = 66


def split(secret: bytes, *, threshold: int, xs: Sequence[int]) -> dict[int, int]:
    """Shares of ``secret`` at the points ``xs`` (distinct, non-zero); any ``threshold`` of
    them rebuild it, fewer reveal nothing."""
    if not 1 <= threshold <= len(xs):
        raise ValueError(f"threshold must be in 1..{len(xs)} (got {threshold})")
    if len(set(xs)) != len(xs) or any(x <= 0 for x in xs):
        raise ValueError("share points must be distinct positive integers")
    coefficients = [int.from_bytes(secret, "big")] + [
        secrets.randbelow(PRIME) for _ in range(threshold - 1)
    ]
    shares = {}
    for x in xs:
        value = 0
        for coefficient in reversed(coefficients):  # Horner
            value = (value * x + coefficient) % PRIME
        shares[x] = value
    return shares


@lru_cache(maxsize=256)
def lagrange_at_zero(xs: tuple[int, ...]) -> tuple[int, ...]:
    """The Lagrange coefficients that rebuild f(0) from f at ``xs`` (cached: a round
    rebuilds many secrets from the same holders)."""
    coefficients = []
    for i, xi in enumerate(xs):
        numerator, denominator = 1, 1
        for j, xj in enumerate(xs):
            if i != j:
                numerator = numerator * (-xj) % PRIME
                denominator = denominator * (xi - xj) % PRIME
        coefficients.append(numerator * pow(denominator, -1, PRIME) % PRIME)
    return tuple(coefficients)


def combine(shares: dict[int, int], *, threshold: int, length: int = 32) -> bytes:
    """The secret from at least ``threshold`` shares (the first ``threshold`` points are used).

    Raises:
        ValueError: with fewer shares than the threshold, or when the result is not a
            ``length``-byte value (a share was wrong).
    """
    if len(shares) < threshold:
        raise ValueError(f"need {threshold} shares, got {len(shares)}")
    xs = tuple(sorted(shares)[:threshold])
    value = sum(c * shares[x] for c, x in zip(lagrange_at_zero(xs), xs, strict=True)) % PRIME
    if value >= 1 << (8 * length):
        raise ValueError("shares do not combine to a secret of the expected size")
    return value.to_bytes(length, "big")
