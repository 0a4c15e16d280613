import pytest
from sqlalchemy.exc import OperationalError

from mlaas import accounts
from mlaas.admission import AdmissionLedger
from mlaas.tiers import TiersConfig

TIERS = {
    "tiers": {
        "free": {"quotas": {"training_jobs": 3, "inference_requests": 10}},
        "enterprise": {"quotas": {"training_jobs": None, "inference_requests": None}},
    },
    "rate_limits": {"window_s": 60, "default_per_window": 5, "endpoints": {"/health": 2}},
    "metered": {"POST /v1/train": "training_jobs"},
}


@pytest.fixture
def db(database_url: str) -> str:
    return database_url


def test_rate_limit_admits_exactly_the_limit_then_says_when_to_retry(db: str) -> None:
    ledger = AdmissionLedger(db, TIERS)

    results = [ledger.admit("ten_a", "/v1/usage", tenant_id="ten_a") for _ in range(8)]

    assert results[:5] == [None] * 5
    refusal = results[5]
    assert refusal is not None and refusal[0] == "RATE_LIMIT_EXCEEDED"
    assert 0 < refusal[1] <= 60 and refusal[2] == 5
    assert ledger.admit("ten_b", "/v1/usage", tenant_id="ten_b") is None, "limits are per tenant"
    assert ledger.admit("ten_a", "/v1/keys", tenant_id="ten_a") is None, "and per endpoint"


def test_quota_refuses_the_unit_that_would_pass_the_monthly_limit(db: str) -> None:
    ledger = AdmissionLedger(db, TIERS)
    units = {"training_jobs": 1}

    outcomes = [
        ledger.admit("t", "/v1/train", tenant_id="t", tier="free", units=units) for _ in range(4)
    ]

    assert outcomes[:3] == [None] * 3
    assert outcomes[3] is not None and outcomes[3][0] == "QUOTA_EXCEEDED"
    assert ledger.admit("e", "/v1/train", tenant_id="e", tier="enterprise", units=units) is None


def test_batch_consumption_is_all_or_nothing(db: str) -> None:
    ledger = AdmissionLedger(db, TIERS)

    assert ledger.consume("t", "free", "inference_requests", 8, "/v1/batch_predict") is None
    refused = ledger.consume("t", "free", "inference_requests", 3, "/v1/batch_predict")

    assert refused is not None and refused[0] == "QUOTA_EXCEEDED"
    assert ledger.consume("t", "free", "inference_requests", 2, "/v1/batch_predict") is None


def test_quota_usage_survives_a_new_ledger_after_flush(db: str) -> None:
    tenant = accounts.create_tenant(db, "acme", tier="free")
    first = AdmissionLedger(db, TIERS)
    for _ in range(3):
        assert (
            first.admit(tenant.id, "/v1/train", tenant_id=tenant.id, units={"training_jobs": 1})
            is None
        )
    written = first.write(first.take_pending())

    second = AdmissionLedger(db, TIERS)
    refusal = second.admit(tenant.id, "/v1/train", tenant_id=tenant.id, units={"training_jobs": 1})

    assert written == 2  # one row of requests and one of training_jobs
    assert refusal is not None and refusal[0] == "QUOTA_EXCEEDED"


def test_failed_write_keeps_the_batch_for_the_next_flush(db: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    ledger = AdmissionLedger(f"sqlite:///{tmp_path / 'missing-dir' / 'no.db'}", TIERS)
    ledger.admit("t", "/v1/usage", tenant_id="t")
    pending = ledger.take_pending()

    with pytest.raises(OperationalError):
        ledger.write(pending)
    ledger.restore_pending(pending)

    assert sum(ledger.take_pending().values()) == 1


def test_tiers_config_rejects_unknown_quota_category() -> None:
    with pytest.raises(ValueError, match="unknown quota categories"):
        TiersConfig.model_validate({"tiers": {"free": {"quotas": {"gpus": 1}}}})
