"""Bit-packed residues: a masked vector sent at exactly its modulus's width.

Element ``i`` holds bits ``i*m .. i*m + m - 1`` of one little-endian bit string (``m`` is
the modulus's bit width), so ``length`` elements take ``ceil(length * m / 8)`` bytes and the
unused high bits of the last byte are zero (one canonical encoding per vector). Eight
elements fill exactly ``m`` bytes, so element ``8g + r`` starts at byte ``g*m + r*m // 8``,
bit ``r*m % 8``: each of the eight lanes ``r`` is a set of strided byte columns of a
``(groups, m)`` array, and packing is a few vectorized passes per lane, no Python loop over
elements.
"""

from __future__ import annotations

import numpy as np

ENCODING = "bitpacked-le"  # the name a message gives this encoding


def packed_size(length: int, bits: int) -> int:
    """Bytes that ``length`` elements of ``bits`` bits take."""
    return (length * bits + 7) // 8


def _check_bits(bits: int) -> None:
    if not 1 <= bits <= 64:
        raise ValueError(f"bits must be in 1..64 (got {bits})")


def _lanes(bits: int) -> list[tuple[int, int, int]]:
    """For each lane ``r``: its first byte column, bit shift, and how many bytes it spans."""
    lanes = []
    for r in range(8):
        column, shift = divmod(r * bits, 8)
        lanes.append((column, shift, (shift + bits + 7) // 8))
    return lanes


def pack_residues(values: np.ndarray, bits: int) -> bytes:
    """``values`` (each below ``2**bits``) as ``packed_size(len(values), bits)`` bytes.

    Raises:
        ValueError: a value does not fit in ``bits`` bits.
    """
    _check_bits(bits)
    values = np.asarray(values, dtype=np.uint64)
    length = len(values)
    if length and bits < 64 and int(values.max()) >> bits:
        raise ValueError(f"every value must be below 2**{bits}")
    groups = -(-length // 8)
    padded = np.zeros(groups * 8, dtype=np.uint64)
    padded[:length] = values
    elements = padded.reshape(groups, 8)
    out = np.zeros((groups, bits), dtype=np.uint8)
    for r, (column, shift, span) in enumerate(_lanes(bits)):
        lane = elements[:, r]
        low = lane << np.uint64(shift)  # the lane's bits at their place in its bytes
        if span <= 8:  # all of them in one little-endian word: OR its bytes in at once
            out[:, column:column + span] |= low.astype("<u8").view(np.uint8).reshape(
                groups, 8)[:, :span]
            continue
        for j in range(span):
            if j < 8:
                byte = (low >> np.uint64(8 * j)).astype(np.uint8)  # astype keeps 8 bits
            else:  # the ninth byte, only when shift + bits > 64
                byte = (lane >> np.uint64(64 - shift)).astype(np.uint8)
            out[:, column + j] |= byte
    return out.tobytes()[:packed_size(length, bits)]


def unpack_residues(data: bytes, bits: int, length: int) -> np.ndarray:
    """The ``length`` residues packed in ``data``, as ``uint64``.

    Raises:
        ValueError: ``data`` is not exactly ``packed_size(length, bits)`` bytes, or its
            padding bits are not zero.
    """
    _check_bits(bits)
    expected = packed_size(length, bits)
    if len(data) != expected:
        raise ValueError(f"{length} elements of {bits} bits take {expected} bytes, "
                         f"got {len(data)}")
    tail = (length * bits) % 8
    if tail and data[-1] >> tail:
        raise ValueError("the padding bits after the last element must be zero")
    if length == 0:
        return np.zeros(0, dtype=np.uint64)
    groups = -(-length // 8)
    raw = np.zeros(groups * bits + 8, dtype=np.uint8)  # 8 spare bytes: the last word read
    raw[:expected] = np.frombuffer(data, dtype=np.uint8)
    elements = np.zeros((groups, 8), dtype=np.uint64)
    if bits <= 57:  # each lane is one unaligned little-endian word per group, shifted
        for r, (column, shift, _) in enumerate(_lanes(bits)):
            words = np.ndarray((groups,), dtype="<u8", buffer=raw, offset=column,
                               strides=(bits,))
            np.right_shift(words, np.uint64(shift), out=elements[:, r])
        elements &= np.uint64((1 << bits) - 1)
        return elements.reshape(-1)[:length]
    columns = raw[:groups * bits].reshape(groups, bits)
    for r, (column, shift, span) in enumerate(_lanes(bits)):
        lane = elements[:, r]
        for j in range(span):
            byte = columns[:, column + j].astype(np.uint64)
            if j < 8:  # bytes above the first are multiples of 2**8, so shifting adds up
                lane |= (byte << np.uint64(8 * j)) >> np.uint64(shift)
            else:
                lane |= byte << np.uint64(64 - shift)
    if bits < 64:
        elements &= np.uint64((1 << bits) - 1)
    return elements.reshape(-1)[:length]
