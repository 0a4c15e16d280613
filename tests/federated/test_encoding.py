"""Mask removal in cached chunks, the bit-packed binary encoding of masked vectors, and
compact sealed share records."""

from __future__ import annotations

import json

import numpy as np
import pytest

from federated import (
    BadSignatureError,
    BinaryMessage,
    InProcessRound,
    MalformedMessageError,
    expand_mask,
    pack_residues,
    packed_size,
    unpack_residues,
)
from federated._masking import CHUNK_BYTES, remove_masks, signed_mask_sum
from federated._messages import b64, pack_share_record, sign_message, unpack_share_record

MODULUS_BITS = 23  # 16-bit inputs of up to 100 nodes
D = 1001  # not a multiple of 8: the last byte is part padding


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


@pytest.mark.parametrize("bits", [1, 7, 8, 9, 16, 23, 24, 31, 32, 33, 40, 57, 58, 63, 64])
def test_bit_packing_round_trips_at_every_width_with_edge_values(bits: int) -> None:
    top = (1 << bits) - 1
    rng = np.random.default_rng(bits)
    middle = [int(v) for v in rng.integers(0, 1 << min(bits, 62), 21, dtype=np.uint64)]
    values = np.array([0, top, 0, top, *middle, top, 0], dtype=np.uint64)  # 27: groups + tail

    packed = pack_residues(values, bits)
    expected = sum(int(v) << (i * bits) for i, v in enumerate(values))

    assert len(packed) == packed_size(len(values), bits) == -(-len(values) * bits // 8)
    assert packed == expected.to_bytes(len(packed), "little")  # the documented bit layout
    assert np.array_equal(unpack_residues(packed, bits, len(values)), values)
    for length in (0, 1, 8):  # no element, one short group, one whole group
        assert np.array_equal(unpack_residues(pack_residues(values[:length], bits), bits,
                                              length), values[:length])


def test_bit_packing_refuses_values_wider_than_the_modulus_and_bad_lengths() -> None:
    packed = pack_residues(np.array([1, 2, 3], dtype=np.uint64), 23)  # 69 bits -> 9 bytes

    with pytest.raises(ValueError, match="below 2\\*\\*23"):
        pack_residues(np.array([1 << 23], dtype=np.uint64), 23)
    with pytest.raises(ValueError, match="take 9 bytes, got 8"):
        unpack_residues(packed[:-1], 23, 3)
    with pytest.raises(ValueError, match="take 9 bytes, got 10"):
        unpack_residues(packed + b"\0", 23, 3)
    with pytest.raises(ValueError, match="padding bits"):
        unpack_residues(packed[:-1] + bytes([packed[-1] | 0x80]), 23, 3)


def _vectors(n: int, d: int) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(1)
    return {i: rng.integers(0, 2**16, d, dtype=np.uint64) for i in range(1, n + 1)}


def _at_masked_input(n: int = 5, d: int = D) -> InProcessRound:
    round_ = InProcessRound.create(n, threshold=3, neighbours=None, vector_length=d,
                                   modulus_bits=MODULUS_BITS)
    round_._stage(range(1, n + 1), lambda i: round_.clients[i].advertise())
    round_._stage(range(1, n + 1), lambda i: round_.clients[i].share_keys(
        round_.server.view_for(i)))
    return round_


def test_binary_and_json_inputs_mix_in_one_round_and_the_sum_is_exact() -> None:
    vectors = _vectors(5, D)
    round_ = _at_masked_input()
    for i in range(1, 6):
        client, view = round_.clients[i], round_.server.view_for(i)
        if i % 2:
            sent = client.masked_input_binary(view, vectors[i], {"samples": 3})
            round_.server.receive(sent.message, sent.body)
        else:
            round_.server.receive(client.masked_input(view, vectors[i]))
    round_.server.close_stage()
    round_.unmask(range(1, 6))

    total = round_.server.aggregate()

    assert np.array_equal(total, sum(vectors.values()) & np.uint64(2**MODULUS_BITS - 1))
    assert round_.server.node_claims[1] == {"samples": 3, "epsilon": None}
    assert len(sent.body) == packed_size(D, MODULUS_BITS)


def test_a_tampered_binary_body_is_refused_and_the_genuine_one_is_taken() -> None:
    round_ = _at_masked_input()
    sent = round_.clients[1].masked_input_binary(round_.server.view_for(1),
                                                 np.zeros(D, np.uint64))
    flipped = bytearray(sent.body)
    flipped[10] ^= 1

    with pytest.raises(BadSignatureError) as caught:
        round_.server.receive(sent.message, bytes(flipped))
    with pytest.raises(BadSignatureError):
        round_.server.receive(sent.message, sent.body[:-1])  # truncated: not what was signed
    round_.server.receive(sent.message, sent.body)

    assert caught.value.details["reason"] == "bad_signature"
    assert "vector_sha256" in caught.value.message
    assert caught.value.status_code == 403 and caught.value.code == "FORBIDDEN"
    assert round_.server.masked == {1}


def test_a_binary_vector_of_the_wrong_length_is_refused_with_the_expected_size() -> None:
    round_ = _at_masked_input()
    sent = round_.clients[3].masked_input_binary(round_.server.view_for(3),
                                                 np.zeros(D - 1, np.uint64))

    with pytest.raises(MalformedMessageError) as caught:
        round_.server.receive(sent.message, sent.body)
    assert caught.value.details == {"reason": "wrong_length", "expected": D,
                                    "expected_bytes": packed_size(D, MODULUS_BITS)}
    assert caught.value.status_code == 422 and 3 not in round_.server.masked


def test_a_binary_message_without_its_body_or_with_a_stray_body_is_refused() -> None:
    round_ = _at_masked_input()
    sent = round_.clients[2].masked_input_binary(round_.server.view_for(2),
                                                 np.zeros(D, np.uint64))
    unmask = sign_message(round_.clients[2].identity, pool_id="pool_test", round_number=1,
                          stage="masked_input", node=2, payload={"vector": "AAAA"})

    with pytest.raises(MalformedMessageError, match="vector as its body"):
        round_.server.receive(sent.message)
    with pytest.raises(MalformedMessageError, match="vector_encoding"):
        round_.server.receive(unmask, b"")  # a JSON-form message does not take a body
    assert round_.server.masked == set()


def test_the_message_header_round_trips_and_garbage_is_refused() -> None:
    sent = BinaryMessage({"pool_id": "p", "round": 1, "payload": {"x": "é"}}, b"\x00\x01")
    headers = sent.headers()

    assert headers["Content-Type"] == "application/octet-stream"
    assert BinaryMessage.message_of_header(headers[BinaryMessage.HEADER]) == sent.message
    for garbage in ("not base64!", b64(b"[1, 2]"), b64(b"\xff\xfe")):
        with pytest.raises(ValueError, match=BinaryMessage.HEADER):
            BinaryMessage.message_of_header(garbage)


def test_a_binary_upload_is_within_a_tenth_of_the_vector_at_the_modulus_width() -> None:
    d = 20_000
    round_ = InProcessRound.create(10, threshold=4, neighbours=4, vector_length=d,
                                   modulus_bits=MODULUS_BITS)

    round_.run(_vectors(10, d))

    vector_bytes = packed_size(d, MODULUS_BITS)
    assert max(round_.sent_bytes.values()) <= 1.1 * vector_bytes


def test_a_share_record_reads_in_the_compact_and_the_json_form_and_refuses_garbage() -> None:
    signatures = {"b": bytes(range(64)), "sk": bytes(range(64, 128))}
    shares = {"b": (2**520 + 5, signatures["b"]), "sk": (7, signatures["sk"])}
    expected = {kind: {"value": hex(value), "sig": b64(signature)}
                for kind, (value, signature) in shares.items()}
    compact = pack_share_record(shares)

    assert len(compact) == 261
    assert unpack_share_record(compact) == expected
    assert unpack_share_record(json.dumps(expected).encode()) == expected  # first clients
    assert unpack_share_record(compact[:-1]) is None
    assert unpack_share_record(b"{not json") is None
    assert unpack_share_record(b"\x02" + compact[1:]) is None
