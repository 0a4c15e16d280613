"""Pool specs that cannot be secure are refused with the fix; quantization and Shamir."""

from __future__ import annotations

import secrets
from typing import Any

import numpy as np
import pytest

from federated import (
    PoolSpecError,
    _shamir,
    dequantize_mean,
    parse_pool_spec,
    quantize,
    weighted_input,
)


def _spec(**secure: Any) -> dict[str, Any]:
    return {
        "name": "digits-fl",
        "model": {"num_features": 64, "num_classes": 10},
        "min_nodes": 6,
        "target_nodes": 10,
        "secure_aggregation": {"threshold": 6, **secure},
    }


def test_a_sound_spec_is_accepted() -> None:
    spec = parse_pool_spec(_spec())

    assert spec.holders == 10 and spec.secure_aggregation.threshold == 6


def test_threshold_at_half_the_nodes_is_refused_with_the_fix() -> None:
    with pytest.raises(PoolSpecError) as caught:
        parse_pool_spec(_spec(threshold=5))

    assert caught.value.details["field"] == "secure_aggregation.threshold"
    assert "at least 6" in caught.value.message


def test_secagg_plus_threshold_is_checked_against_the_neighbourhood() -> None:
    parse_pool_spec({**_spec(threshold=3, neighbours=4), "min_nodes": 7})  # 6 can sign
    with pytest.raises(PoolSpecError, match="must sign the survivor set"):
        parse_pool_spec({**_spec(threshold=3, neighbours=4), "min_nodes": 5})
    with pytest.raises(PoolSpecError, match="more than half of the 5"):
        parse_pool_spec({**_spec(threshold=2, neighbours=4), "min_nodes": 5})
    with pytest.raises(PoolSpecError, match="must be even"):
        parse_pool_spec({**_spec(threshold=3, neighbours=3), "min_nodes": 5})


def test_modulus_too_small_for_nodes_times_range_is_refused() -> None:
    with pytest.raises(PoolSpecError) as caught:
        parse_pool_spec(_spec(modulus_bits=24, quantization_bits=16, sample_cap=1000))

    assert caught.value.details["field"] == "secure_aggregation.modulus_bits"
    assert "modulus_bits >= 30" in caught.value.message


def test_threshold_above_min_nodes_is_refused() -> None:
    with pytest.raises(PoolSpecError, match="lower it or raise min_nodes"):
        parse_pool_spec({**_spec(threshold=6), "min_nodes": 5})


def test_unknown_and_out_of_range_fields_name_the_field() -> None:
    with pytest.raises(PoolSpecError) as caught:
        parse_pool_spec({**_spec(), "rounds": 0})

    assert caught.value.details["field"] == "rounds"


def test_stochastic_rounding_is_unbiased() -> None:
    rng = np.random.default_rng(1)
    update = np.full(20_000, 0.123)

    q = quantize(update, clip=1.0, bits=4, rng=rng)
    mean, weight = dequantize_mean(np.append(q, 1), clip=1.0, bits=4)

    assert set(np.unique(q)) <= {8, 9}  # 0.123 lies between two levels
    assert abs(mean.mean() - 0.123) < 0.005 and weight == 1


def test_weighted_mean_of_nodes_is_recovered_and_clipped() -> None:
    rng = np.random.default_rng(2)
    a, b = np.array([0.2, -0.4, 3.0]), np.array([0.0, 0.4, -3.0])

    total = weighted_input(a, samples=300, sample_cap=100, clip=1.0, bits=16, rng=rng) + \
        weighted_input(b, samples=50, sample_cap=100, clip=1.0, bits=16, rng=rng)
    mean, weight = dequantize_mean(total, clip=1.0, bits=16)

    assert weight == 150  # 300 capped at 100, plus 50
    assert np.allclose(mean, (100 * np.clip(a, -1, 1) + 50 * np.clip(b, -1, 1)) / 150, atol=1e-4)


def test_shamir_needs_t_shares() -> None:
    secret = secrets.token_bytes(32)
    shares = _shamir.split(secret, threshold=3, xs=[1, 2, 5, 7])

    assert _shamir.combine({x: shares[x] for x in (2, 5, 7)}, threshold=3) == secret
    with pytest.raises(ValueError):
        _shamir.combine({x: shares[x] for x in (2, 5)}, threshold=3)
    wrong = {x: shares[x] for x in (1, 2)} | {5: shares[5] + 1}
    with pytest.raises(ValueError):
        _shamir.combine(wrong, threshold=3)
