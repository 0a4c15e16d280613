"""/v1/ai/*: status, synthetic data, analysis and enhancement through the deployed platform."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import Platform
from tests.serve_apps.providers.conftest import (
    FAKE_ANTHROPIC_KEY,
    FAKE_OPENAI_KEY,
    REAL_KEY_VARIABLES,
)
from tests.serve_apps.providers.fake_provider import FakeProvider, Step

REAL_PROVIDERS = ("openai", "anthropic", "perplexity", "gemini", "grok")
CNN = {
    "model_description": "Convolutional Neural Network for image classification",
    "architecture": {
        "layers": [
            {"type": "conv2d", "filters": 32, "kernel_size": 3},
            {"type": "maxpool", "pool_size": 2},
            {"type": "conv2d", "filters": 64, "kernel_size": 3},
            {"type": "dense", "units": 128},
            {"type": "output", "units": 10, "activation": "softmax"},
        ]
    },
    "data_sample": "CIFAR-10 dataset, 32x32 RGB images, 10 classes",
    "performance_metrics": {
        "accuracy": 0.847,
        "loss": 0.423,
        "train_accuracy": 0.95,
        "val_accuracy": 0.847,
    },
}


def fraud_rows(count: int = 200, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(count):
        fraud = bool(rng.random() < 0.2)
        rows.append(
            {
                "amount": round(float(rng.lognormal(5 if fraud else 3.5, 0.8)), 2),
                "hour": int(rng.integers(0, 24)),
                "merchant": str(rng.choice(["food", "travel", "tech"])),
                "is_fraud": int(fraud),
            }
        )
    return rows


def test_status_lists_real_providers_as_not_configured_and_local_as_configured(
    ai_platform: Platform, tenant_key: str
) -> None:
    with ai_platform.client(tenant_key) as client:
        response = client.get("/v1/ai/status")

    body = response.json()
    assert response.status_code == 200, body
    services = body["service_status"]
    assert {name: services[name]["status"] for name in REAL_PROVIDERS} == dict.fromkeys(
        REAL_PROVIDERS, "not_configured"
    )
    assert services["local"]["status"] == "configured"
    assert services["fake-openai"]["status"] == "configured"
    assert "synthetic_data" in services["local"]["capabilities"]
    assert sorted(services["openai"]["capabilities"]) == [
        "analysis",
        "chat",
        "code",
        "synthetic_data",
    ]
    assert body["total_services"] == len(services)
    assert body["configured_services"] == sum(
        s["status"] != "not_configured" for s in services.values()
    )
    assert body["overall_health"] in ("partial_configuration", "degraded")
    assert FAKE_OPENAI_KEY not in response.text and FAKE_ANTHROPIC_KEY not in response.text
    assert {services[p]["api_key_env"] for p in REAL_PROVIDERS} == set(REAL_KEY_VARIABLES)


def test_synthetic_data_from_local_is_fitted_on_the_rows_sent(
    ai_platform: Platform, tenant_key: str
) -> None:
    rows = fraud_rows()

    with ai_platform.client(tenant_key) as client:
        response = client.post(
            "/v1/ai/synthetic-data",
            json={
                "model_description": "Binary classification model for fraud detection",
                "existing_data": rows,
                "target_column": "is_fraud",
                "target_count": 400,
                "seed": 7,
                "quality_requirements": {"balance": "balanced"},
            },
        )

    body = response.json()
    assert response.status_code == 200, body
    data = body["synthetic_data"]
    metrics = data["quality_metrics"]
    assert body["provider"] == "local" and data["fitted_on"] == "rows"
    assert data["generated_samples"] == len(data["rows"]) == 400
    assert set(data["rows"][0]) == {"amount", "hour", "merchant", "is_fraud"}
    assert metrics["class_counts"] == {"0": 200, "1": 200} and metrics["balance_ratio"] == 1.0
    assert set(metrics["column_distances"]) == {"amount", "hour", "merchant", "is_fraud"}
    assert all(
        0 <= d < 0.25 for name, d in metrics["column_distances"].items() if name != "is_fraud"
    )
    assert 0.7 < metrics["realism_score"] <= 1 and 0.5 < metrics["diversity_score"] <= 1
    assert {r["merchant"] for r in data["rows"]} <= {"food", "travel", "tech"}
    assert all(isinstance(r["hour"], int) and 0 <= r["hour"] <= 23 for r in data["rows"])


def test_synthetic_data_over_the_inline_limit_is_stored_as_a_dataset(
    ai_platform: Platform, tenant_key: str
) -> None:
    with ai_platform.client(tenant_key) as client:
        response = client.post(
            "/v1/ai/synthetic-data",
            json={
                "model_description": "Binary classification model for fraud detection",
                "existing_data": "Transaction data with features: amount, merchant, time, location",
                "target_count": 5000,
            },
        )

        body = response.json()
        assert response.status_code == 200, body
        data = body["synthetic_data"]
        downloaded = client.get(data["dataset_url"])
    _, other_key = ai_platform.new_tenant()
    with ai_platform.client(other_key) as other:
        foreign = other.get(data["dataset_url"])

    assert data["generated_samples"] == 5000 and data["rows_are_sample"] is True
    assert "dataset_uri" not in data and ai_platform.storage.base_uri not in response.text
    assert data["dataset_url"] == f"/v1/ai/synthetic-data/{data['dataset_id']}"
    import io

    import pandas as pd

    assert downloaded.status_code == 200, downloaded.text
    stored = pd.read_parquet(io.BytesIO(downloaded.content))
    assert len(stored) == 5000
    assert foreign.status_code == 404, "another tenant's dataset is never revealed"
    assert data["data_schema"]["features"] == ["amount", "merchant", "time", "location"]
    assert data["assumptions"], "columns read from prose are declared as assumptions"


def test_analyze_from_local_counts_parameters_and_flags_missing_layers(
    ai_platform: Platform, tenant_key: str
) -> None:
    with ai_platform.client(tenant_key) as client:
        response = client.post("/v1/ai/analyze", json=CNN)

    body = response.json()
    assert response.status_code == 200, body
    assessment = body["analysis"]["architecture_assessment"]
    failed = {c["check"] for c in assessment["layer_checks"] if not c["passed"]}
    assert body["provider"] == "local"
    # 896 + 18,496 + 13*13*64*128+128 + 1,290 for the documented CNN on 32x32x3
    assert assessment["parameter_count"] == 1_405_258
    assert failed == {"normalization", "regularization", "dense_after_conv", "overfitting"}
    assert body["analysis"]["performance_analysis"]["overfitting_risk"] == "high"
    assert {s["category"] for s in body["analysis"]["optimization_suggestions"]} >= {
        "architecture",
        "regularization",
    }


def test_analyze_repairs_an_llm_answer_that_does_not_match_the_schema(
    ai_platform: Platform, tenant_key: str, fake_provider: FakeProvider
) -> None:
    valid = (
        '{"architecture_assessment": {"strengths": ["small"], "weaknesses": [], "overall_score": 0.8},'  # noqa: E501
        ' "performance_analysis": {"accuracy_assessment": "fine", "convergence_quality": "ok",'
        ' "overfitting_risk": "low"}, "optimization_suggestions": []}'
    )
    fake_provider.script(
        "analyst-fake", Step(content="Sure! The model looks fine."), Step(content=valid)
    )

    with ai_platform.client(tenant_key) as client:
        response = client.post("/v1/ai/analyze", json={**CNN, "provider": "fake-analyst"})

    body = response.json()
    assert response.status_code == 200, body
    assert body["provider"] == "fake-analyst"
    assert body["analysis"]["architecture_assessment"]["overall_score"] == 0.8
    repair = fake_provider.requests_for("analyst-fake")[-1]
    assert "did not match the schema" in repair.text


def test_analyze_falls_back_to_local_when_the_repair_fails_too(
    ai_platform: Platform, tenant_key: str, fake_provider: FakeProvider
) -> None:
    fake_provider.script("analyst-fake", Step(content="not json"), Step(content='{"wrong": 1}'))

    with ai_platform.client(tenant_key) as client:
        response = client.post("/v1/ai/analyze", json={**CNN, "provider": "fake-analyst"})

    assert response.status_code == 200, response.text
    assert response.json()["provider"] == "local"


def test_enhance_reports_research_as_failed_and_returns_the_other_parts(
    ai_platform: Platform, tenant_key: str
) -> None:
    with ai_platform.client(tenant_key) as client:
        response = client.post(
            "/v1/ai/enhance",
            json={
                **{k: CNN[k] for k in ("model_description", "architecture", "performance_metrics")},
                "training_data": fraud_rows(60),
                "synthetic_count": 100,
            },
        )

    body = response.json()
    assert response.status_code == 200, body
    parts = body["enhancements"]
    assert body["status"] == "partial"
    assert (
        parts["synthetic_data"]["status"] == "success"
        and parts["synthetic_data"]["generated_samples"] == 100
    )
    assert parts["architecture_optimization"]["status"] == "success"
    assert parts["research_insights"]["status"] == "failed"
    assert parts["research_insights"]["error"]["code"] == "MISSING_API_KEY"
    assert "PERPLEXITY_API_KEY" in parts["research_insights"]["error"]["details"]["env_vars"]
    summary = body["enhancement_summary"]
    assert summary["providers_used"] == ["local"]
    assert set(summary["part_timings_seconds"]) == set(parts)
    assert [p["phase"] for p in body["implementation_roadmap"]][:1] == ["data_enhancement"]


@pytest.mark.parametrize(
    ("path", "payload", "field"),
    [
        ("/v1/ai/synthetic-data", {"target_count": 10}, "model_description"),
        ("/v1/ai/synthetic-data", {"model_description": "x", "target_count": 0}, "target_count"),
        (
            "/v1/ai/synthetic-data",
            {"model_description": "x", "existing_data": [{"a": 1}]},
            "existing_data",
        ),
        ("/v1/ai/analyze", {"architecture": {"layers": []}}, "model_description"),
        ("/v1/ai/enhance", {"config": {}}, "model_description"),
        ("/v1/chat/completions", {"model": "fake-openai/gpt-fake"}, "messages"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}, "model"),
        ("/v1/chat/completions", {"model": "fake-openai/gpt-fake", "messages": []}, "messages"),
    ],
)
def test_missing_or_bad_fields_are_422(
    ai_platform: Platform, tenant_key: str, path: str, payload: dict, field: str
) -> None:
    with ai_platform.client(tenant_key) as client:
        response = client.post(path, json=payload)

    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"
    assert response.json()["error"]["details"]["field"].startswith(field)


def test_target_column_not_in_the_rows_is_422(ai_platform: Platform, tenant_key: str) -> None:
    with ai_platform.client(tenant_key) as client:
        response = client.post(
            "/v1/ai/synthetic-data",
            json={
                "model_description": "x",
                "existing_data": fraud_rows(10),
                "target_column": "nope",
            },
        )

    assert response.status_code == 422, response.text
    assert response.json()["error"]["details"]["field"] == "target_column"


def test_ai_routes_need_a_key(ai_platform: Platform) -> None:
    with ai_platform.client() as client:
        response = client.get("/v1/ai/status")

    assert response.status_code == 401
