"""Mask removal in cached chunks, and the bit-packed binary encoding of masked vectors."""

from __future__ import annotations

import numpy as np
import pytest

from federated import expand_mask
from federated._masking import CHUNK_BYTES, remove_masks, signed_mask_sum


@pytest.mark.parametrize("modulus_bits", [23, 32, 40, 63])
def test_chunked_mask_sum_equals_the_sum_of_whole_streams(modulus_bits: int) -> None:
    keys = [(bytes([i]) * 32, sign) for i, sign in ((1, 1), (2, -1), (3, 1), (4, -1))]
    word = 4 if modulus_bits <= 32 else 8
    length = 2 * CHUNK_BYTES // word + 37  # three chunks, the last one short
    start = 160
    modulus = 1 << modulus_bits
    expected = np.zeros(length, dtype=object)
    for key, sign in keys:
        expected = (expected + sign * expand_mask(key, length, modulus_bits,
                                                  start=start).astype(object)) % modulus

    summed = signed_mask_sum(keys, length, modulus_bits, start=start)
    total = np.full(length, modulus - 1, dtype=np.uint64)
    unmasked = remove_masks(total, keys, modulus_bits, start=start)

    assert [int(v) for v in summed] == list(expected)
    assert [int(v) for v in unmasked] == list((modulus - 1 - expected) % modulus)
