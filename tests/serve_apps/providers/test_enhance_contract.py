"""``/v1/ai/enhance`` answers every field of the documented answer, with its type, through the
keyless local provider (the deployed platform) and through fake OpenAI and Anthropic providers
(a router in this process); synthetic rows through an LLM provider come in batches past 50 rows,
de-duplicated, each call held against the budget, and always with measured quality.

The documented answer is ``DOCUMENTED_ENHANCE_ANSWER``, copied from the API documentation
(Comprehensive Model Enhancement). A field the platform cannot know is null (see README, AI
providers): the paths in ``NULLABLE`` say which."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import re
from pathlib import Path
from typing import Any

import pytest

from mlaas.storage import local_storage
from serve_apps.providers.catalogue import Catalogue
from serve_apps.providers.enhance import enhance, improvement_potential
from serve_apps.providers.local import LocalProvider
from serve_apps.providers.router import Router
from serve_apps.providers.schemas import (
    EnhanceRequest,
    SyntheticDataRequest,
    TenantRef,
    TrainingSettingsRequest,
)
from serve_apps.providers.state import ProviderStateBook
from serve_apps.providers.state_view import BookBackend, RouterState
from serve_apps.providers.tasks import AiTasks
from tests.conftest import Platform
from tests.serve_apps.providers.fake_provider import FakeProvider, Received, Step, rows_reply
from tests.serve_apps.providers.test_ai_routes import fraud_rows

DOCUMENTED_ENHANCE_REQUEST: dict[str, Any] = {
    "model_description": "Transformer model for natural language processing",
    "training_data": "Text classification dataset, 50K samples, 5 categories",
    "performance_metrics": {
        "accuracy": 0.823,
        "f1_score": 0.801,
        "training_loss": 0.387,
        "validation_loss": 0.421,
    },
    "config": {
        "optimization_focus": "accuracy",
        "performance_constraints": {"max_inference_latency": "100ms", "max_model_size": "500MB"},
        "enhancement_scope": ["architecture", "training", "data"],
    },
}
DOCUMENTED_ENHANCE_ANSWER: dict[str, Any] = {
    "status": "success",
    "enhancement_summary": {
        "providers_used": ["openai", "anthropic", "perplexity"],
        "total_processing_time": 142.3,
        "confidence_score": 0.91,
    },
    "enhancements": {
        "synthetic_data": {
            "provider": "openai",
            "generated_samples": 15000,
            "quality_score": 0.89,
            "augmentation_strategies": ["paraphrasing", "style_transfer", "domain_adaptation"],
        },
        "architecture_optimization": {
            "provider": "anthropic",
            "recommendations": [
                {
                    "component": "attention_mechanism",
                    "modification": "Multi-head attention with 8 heads",
                    "rationale": "Improved feature representation for text classification",
                }
            ],
            "expected_improvements": {"accuracy": "+0.047", "f1_score": "+0.052"},
        },
        "research_insights": {
            "provider": "perplexity",
            "latest_techniques": ["Layer-wise learning rate decay for transformer fine-tuning"],
            "benchmarking_data": {
                "sota_accuracy": 0.934,
                "industry_average": 0.807,
                "improvement_potential": "High",
            },
        },
    },
    "implementation_roadmap": [
        {
            "phase": "data_enhancement",
            "timeline": "1-2 days",
            "tasks": ["Integrate synthetic data", "Implement augmentation pipeline"],
        }
    ],
}
# null when no provider returned the figure (README, AI providers)
NULLABLE = {
    "enhancements.synthetic_data.quality_score",
    "enhancements.architecture_optimization.expected_improvements.accuracy",
    "enhancements.architecture_optimization.expected_improvements.f1_score",
    "enhancements.research_insights.benchmarking_data.sota_accuracy",
    "enhancements.research_insights.benchmarking_data.industry_average",
    "enhancements.research_insights.benchmarking_data.improvement_potential",
    "implementation_roadmap.timeline",
}
KEYS = {"EC_OA_KEY": "sk-enhance-contract-openai-0000000", "EC_AN_KEY": "sk-ant-enhance-000000000"}
TENANT = TenantRef(tenant_id="t-enhance-contract", endpoint="/v1/ai/enhance")


def shape_problems(documented: Any, answer: Any, path: str, nullable: set[str]) -> list[str]:
    """Where ``answer`` lacks a documented field or gives it another JSON type (a list's items
    are checked against the documented first item; null is allowed on ``nullable`` paths)."""
    if answer is None:
        return [] if path in nullable else [f"{path}: null"]
    if isinstance(documented, dict):
        if not isinstance(answer, dict):
            return [f"{path}: {type(answer).__name__}, documented an object"]
        problems = []
        for key, value in documented.items():
            where = f"{path}.{key}" if path else key
            if key not in answer:
                problems.append(f"{where}: missing")
            else:
                problems += shape_problems(value, answer[key], where, nullable)
        return problems
    if isinstance(documented, list):
        if not isinstance(answer, list):
            return [f"{path}: {type(answer).__name__}, documented a list"]
        return [p for item in answer for p in shape_problems(documented[0], item, path, nullable)]
    numbers = (int, float)
    expected = numbers if isinstance(documented, numbers) else type(documented)
    if isinstance(answer, bool) or not isinstance(answer, expected):
        return [f"{path}: {type(answer).__name__}, documented {type(documented).__name__}"]
    return []


def contract_problems(answer: dict[str, Any]) -> list[str]:
    """The documented shape; a part that did not succeed may leave its fields null or empty."""
    nullable = set(NULLABLE)
    for name, part in answer.get("enhancements", {}).items():
        if part.get("status") != "success":
            nullable |= {
                f"enhancements.{name}.{field}"
                for field in DOCUMENTED_ENHANCE_ANSWER["enhancements"][name]
            }
    return shape_problems(DOCUMENTED_ENHANCE_ANSWER, answer, "", nullable)


# ----- through the deployed platform: local only -----


def test_documented_enhance_request_through_local_answers_every_documented_field(
    ai_platform: Platform, tenant_key: str
) -> None:
    # Execute
    with ai_platform.client(tenant_key) as client:
        response = client.post("/v1/ai/enhance", json=DOCUMENTED_ENHANCE_REQUEST)

    # Assert
    body = response.json()
    assert response.status_code == 200, body
    assert contract_problems(body) == []
    parts = body["enhancements"]
    assert parts["synthetic_data"]["provider"] == "local"
    assert parts["synthetic_data"]["generated_samples"] == 500
    assert parts["synthetic_data"]["augmentation_strategies"][0].startswith("gaussian_copula")
    assert parts["architecture_optimization"]["provider"] == "local"
    assert parts["architecture_optimization"]["expected_improvements"] == dict.fromkeys(
        DOCUMENTED_ENHANCE_REQUEST["performance_metrics"]
    ), "local estimates no improvement: each reported metric is there, null"
    assert parts["research_insights"]["status"] == "failed", "no research provider has a key"
    summary = body["enhancement_summary"]
    realism = parts["synthetic_data"]["quality_score"]
    assert summary["confidence_score"] == round(2 / 3 * realism, 3)
    assert summary["confidence_basis"]["parts_run"] == 3
    assert all(phase["timeline"] is None for phase in body["implementation_roadmap"])


# ----- in this process: fake OpenAI and Anthropic providers -----


def _model() -> dict[str, Any]:
    return {"input_per_mtok": 1, "output_per_mtok": 2, "context_window": 100_000}


def make_tasks(
    fake: FakeProvider, storage_dir: Path, budget_usd: float | None = None
) -> tuple[AiTasks, BookBackend]:
    """A router with ``ec-oa`` (OpenAI wire) and ``ec-an`` (Anthropic wire), each with every AI
    capability, and ``local``; the free tier's budget is ``budget_usd``."""
    every = ["synthetic_data", "analysis", "research"]
    catalogue = Catalogue.model_validate(
        {
            "routing": {"deadline_s": 20, "retry": {"base_delay_s": 0.01, "max_delay_s": 0.05}},
            "budgets_usd": {"free": budget_usd, "pro": None, "enterprise": None},
            "providers": {
                "ec-oa": {
                    "kind": "openai",
                    "base_url": fake.openai_base_url,
                    "api_key_env": "EC_OA_KEY",
                    "priority": 1,
                    "timeout_s": 5,
                    "capabilities": every,
                    "models": {"ec-gpt": _model()},
                },
                "ec-an": {
                    "kind": "anthropic",
                    "base_url": fake.anthropic_base_url,
                    "api_key_env": "EC_AN_KEY",
                    "priority": 2,
                    "timeout_s": 5,
                    "capabilities": every,
                    "models": {"ec-claude": _model()},
                },
                "local": {
                    "kind": "local",
                    "priority": 1000,
                    "capabilities": ["synthetic_data", "analysis"],
                    "models": {"statistical": _model()},
                },
            },
        }
    )
    backend = BookBackend(
        ProviderStateBook(catalogue.routing.circuit_breaker, catalogue.routing.cache)
    )
    router = Router(catalogue, state=RouterState(backend), env=KEYS)
    return AiTasks(router, LocalProvider(storage=local_storage(storage_dir))), backend


ANALYSIS = {
    "architecture_assessment": {
        "strengths": ["pretrained encoder"],
        "weaknesses": ["fixed positional encoding"],
        "overall_score": 0.7,
    },
    "performance_analysis": {
        "accuracy_assessment": "moderate",
        "convergence_quality": "stable",
        "overfitting_risk": "low",
    },
    "optimization_suggestions": [
        {
            "category": "architecture",
            "component": "positional_encoding",
            "suggestion": "Learned positional embeddings",
            "expected_improvement": "better handling of variable-length sequences",
            "rationale": "sequences vary from 5 to 500 tokens",
        },
        {  # an older answer: no component, no rationale
            "category": "training",
            "suggestion": "Layer-wise learning rate decay",
            "expected_improvement": "steadier fine-tuning",
        },
    ],
    "expected_improvements": {"accuracy": 0.047},
}
RESEARCH = {
    "latest_techniques": ["Layer-wise learning rate decay", "Curriculum learning"],
    "benchmarking_notes": ["SST-5 leaderboards"],
    "sota_accuracy": 0.934,
    "industry_average": 0.807,
    "sources": ["https://paperswithcode.com/sota/text-classification"],
}
_KEYS_LINE = re.compile(r"Every row has exactly these keys: (\[.*?\])")
_SEEDS = itertools.count()


def llm_reply(received: Received) -> str:
    """What an LLM answers each /v1/ai/* task: rows with the asked keys, an analysis, research."""
    text = received.text
    if "Every row has exactly these keys" in text:
        columns = json.loads(_KEYS_LINE.findall(text)[-1])

        def row(rng: random.Random) -> dict[str, Any]:
            return {
                c: rng.choice(["0", "1"]) if c == "label" else round(rng.gauss(0, 1), 6)
                for c in columns
            }

        return rows_reply(row, seed=next(_SEEDS) * 1000)(received)
    if "Analyse this machine-learning model" in text:
        return json.dumps(ANALYSIS)
    return json.dumps(RESEARCH)


@pytest.mark.parametrize(
    ("provider", "model"),
    [("ec-oa", "ec-gpt"), ("ec-an", "ec-claude")],
)
def test_documented_enhance_request_through_an_llm_provider_answers_every_documented_field(
    fake: FakeProvider, tmp_path: Path, provider: str, model: str
) -> None:
    # Prepare
    fake.reset(model)
    fake.script(model, *[Step(reply=llm_reply)] * 30)
    tasks, _ = make_tasks(fake, tmp_path)
    request = EnhanceRequest.model_validate(
        {**DOCUMENTED_ENHANCE_REQUEST, "synthetic_count": 120, "provider": provider}
    )

    # Execute
    answer = asyncio.run(enhance(request, tasks, TENANT))
    fake.reset(model)

    # Assert
    assert contract_problems(answer) == []
    assert answer["status"] == "success"
    assert answer["enhancement_summary"]["providers_used"] == [provider]
    parts = answer["enhancements"]
    synthetic = parts["synthetic_data"]
    assert synthetic["generated_samples"] == 120
    assert synthetic["quality_score"] is None, "rows from a description: no reference for realism"
    assert synthetic["quality_metrics"]["diversity_score"] > 0
    architecture = parts["architecture_optimization"]
    assert architecture["recommendations"][0] == {
        "component": "positional_encoding",
        "modification": "Learned positional embeddings",
        "rationale": "sequences vary from 5 to 500 tokens",
        "category": "architecture",
        "expected_improvement": "better handling of variable-length sequences",
    }
    assert architecture["recommendations"][1]["component"] == "training"
    assert architecture["expected_improvements"] == {
        "accuracy": "+0.047",
        "f1_score": None,
        "training_loss": None,
        "validation_loss": None,
    }
    benchmarks = parts["research_insights"]["benchmarking_data"]
    assert (benchmarks["sota_accuracy"], benchmarks["industry_average"]) == (0.934, 0.807)
    assert benchmarks["improvement_potential"] == "High", "0.934 - 0.823 is over 0.05"
    assert answer["enhancement_summary"]["confidence_score"] == 1.0
    phases = [p["phase"] for p in answer["implementation_roadmap"]]
    assert phases == [
        "data_enhancement",
        "architecture_updates",
        "training_optimization",
        "research_follow_up",
    ]


@pytest.mark.parametrize(
    ("sota", "metrics", "expected"),
    [
        (0.934, {"accuracy": 0.823}, "High"),
        (0.85, {"val_accuracy": 0.823}, "Moderate"),
        (0.83, {"accuracy": 0.823}, "Low"),
        (None, {"accuracy": 0.823}, None),
        (0.934, {"f1_score": 0.8}, None),
    ],
)
def test_improvement_potential_is_computed_from_the_returned_sota_or_null(
    sota: float | None, metrics: dict[str, Any], expected: str | None
) -> None:
    assert improvement_potential(sota, metrics) == expected


def test_an_enhance_part_out_of_scope_is_skipped_with_its_documented_fields(
    fake: FakeProvider, tmp_path: Path
) -> None:
    # Prepare
    fake.reset("ec-gpt")
    fake.script("ec-gpt", *[Step(reply=llm_reply)] * 3)
    tasks, _ = make_tasks(fake, tmp_path)
    request = EnhanceRequest.model_validate(
        {
            **DOCUMENTED_ENHANCE_REQUEST,
            "provider": "ec-oa",
            "config": {"enhancement_scope": ["architecture"]},
        }
    )

    # Execute
    answer = asyncio.run(enhance(request, tasks, TENANT))
    fake.reset("ec-gpt")

    # Assert
    assert contract_problems(answer) == []
    assert answer["enhancements"]["synthetic_data"]["status"] == "skipped"
    assert answer["enhancement_summary"]["confidence_basis"]["parts_run"] == 2
    assert answer["status"] == "success"


# ----- synthetic rows through an LLM provider, in batches -----


def fraud_row(rng: random.Random) -> dict[str, Any]:
    """A row like ``fraud_rows``'s, as an LLM would write it."""
    fraud = rng.random() < 0.2
    return {
        "amount": round(rng.lognormvariate(5 if fraud else 3.5, 0.8), 2),
        "hour": rng.randrange(24),
        "merchant": rng.choice(["food", "travel", "tech"]),
        "is_fraud": int(fraud),
    }


def test_rows_through_an_llm_provider_come_in_batches_each_call_held_and_accounted(
    fake: FakeProvider, tmp_path: Path
) -> None:
    # Prepare
    fake.reset("ec-gpt")
    fake.script("ec-gpt", *[Step(reply=rows_reply(fraud_row))] * 40)
    tasks, backend = make_tasks(fake, tmp_path, budget_usd=1.0)
    request = SyntheticDataRequest(
        model_description="fraud detection",
        existing_data=fraud_rows(40),
        target_column="is_fraud",
        target_count=230,
        provider="ec-oa",
    )

    # Execute
    answer = asyncio.run(tasks.synthetic_data(request, TenantRef(tenant_id="t-batches")))
    sent = fake.requests_for("ec-gpt")
    fake.reset("ec-gpt")

    # Assert
    data = answer["synthetic_data"]
    assert answer["provider"] == "ec-oa"
    assert data["generated_samples"] == len(data["rows"]) == 230
    assert len({json.dumps(r, sort_keys=True) for r in data["rows"]}) == 230
    assert data["provider_calls"] == len(sent) == 5, "50 rows a call at most"
    accounted = [u for u in backend.usage if u[0] == "t-batches"]
    assert len(accounted) == len(sent), "each call accounted"
    assert all(r.body["max_tokens"] == 4096 for r in sent), "each call within the output cap"
    assert 0.5 < data["quality_metrics"]["realism_score"] <= 1


def test_rows_stop_at_the_budget_with_the_rows_gathered_and_say_why(
    fake: FakeProvider, tmp_path: Path
) -> None:
    # Prepare: a call holds about 0.0085 USD (4096 output tokens at $2/M) and costs about 0.001
    fake.reset("ec-gpt")
    fake.script("ec-gpt", *[Step(reply=rows_reply(fraud_row))] * 40)
    tasks, backend = make_tasks(fake, tmp_path, budget_usd=0.03)
    request = SyntheticDataRequest(
        model_description="fraud detection",
        existing_data=fraud_rows(40),
        target_count=500,
        provider="ec-oa",
    )

    # Execute
    answer = asyncio.run(tasks.synthetic_data(request, TenantRef(tenant_id="t-budget")))
    fake.reset("ec-gpt")

    # Assert
    data = answer["synthetic_data"]
    spent = sum(u[4] for u in backend.usage if u[0] == "t-budget")
    assert answer["provider"] == "ec-oa"
    assert 50 <= data["generated_samples"] < 500
    assert "budget" in data["stopped_early"]
    assert spent <= 30_000, "micro-USD: never past the budget"
    assert any("Only" in advice for advice in answer["recommendations"])


@pytest.mark.parametrize("source", ["rows", "description"])
def test_500_rows_through_the_fake_openai_provider_come_with_measured_quality(
    ai_platform: Platform, tenant_key: str, fake_provider: FakeProvider, source: str
) -> None:
    # Prepare
    fake_provider.reset("analyst-fake")
    if source == "rows":
        data: dict[str, Any] = {"existing_data": fraud_rows(60), "target_column": "is_fraud"}
        reply = rows_reply(fraud_row)
    else:
        data = {"existing_data": "Transactions with features: amount, hour, merchant"}

        def described(rng: random.Random) -> dict[str, Any]:
            row = fraud_row(rng)
            return {"amount": row["amount"], "hour": row["hour"], "merchant": row["merchant"],
                    "label": str(row["is_fraud"])}  # fmt: skip

        reply = rows_reply(described)
    fake_provider.script("analyst-fake", *[Step(reply=reply)] * 40)
    payload = {
        "model_description": "Binary classification model for fraud detection",
        "target_count": 500,
        "provider": "fake-analyst",
        **data,
    }

    # Execute
    try:
        with ai_platform.client(tenant_key) as client:
            response = client.post("/v1/ai/synthetic-data", json=payload)
        calls = len(fake_provider.requests_for("analyst-fake"))
    finally:
        fake_provider.reset("analyst-fake")

    # Assert
    body = response.json()
    assert response.status_code == 200, body
    synthetic = body["synthetic_data"]
    metrics = synthetic["quality_metrics"]
    assert body["provider"] == "fake-analyst"
    assert synthetic["generated_samples"] == len(synthetic["rows"]) == 500
    assert synthetic["provider_calls"] == calls >= 10
    assert len({json.dumps(r, sort_keys=True) for r in synthetic["rows"]}) == 500
    assert 0 < metrics["diversity_score"] <= 1
    assert metrics["class_counts"] and 0 < metrics["balance_ratio"] <= 1
    if source == "rows":
        assert set(metrics["column_distances"]) == {"amount", "hour", "merchant", "is_fraud"}
        assert 0.5 < metrics["realism_score"] <= 1
        assert metrics["copies_of_source_rows"] is not None
    else:
        assert metrics["realism_score"] is None and metrics["reference"] == "description"
        assert set(metrics["column_distances"]) == {"label"}


# --- training settings for AI-enhanced training ---------------------------------------------

SETTINGS_REQUEST = TrainingSettingsRequest(
    model_description="iris: an mlp classifier",
    model_type="mlp",
    data={"rows": 180, "features": 4, "classes": 3, "majority_share": 0.34},
    epochs=3,
    open_fields=["hyperparameters.lr", "model.hidden_sizes"],
)


@pytest.mark.parametrize("provider", ["ec-oa", "ec-an"])
def test_a_provider_suggests_only_the_settings_the_spec_left_open(
    fake: FakeProvider, tmp_path: Path, provider: str
) -> None:
    """Both wire formats; a value nobody asked for (batch_size) never reaches the job."""
    tasks, backend = make_tasks(fake, tmp_path)
    model = "ec-gpt" if provider == "ec-oa" else "ec-claude"
    fake.script(model, Step(content=json.dumps({
        "lr": 0.004, "hidden_sizes": [48, 24], "batch_size": 512,
        "rationale": ["a small table trains fast", "two layers for three classes"]})))  # fmt: skip
    request = SETTINGS_REQUEST.model_copy(update={"provider": provider})

    answer = asyncio.run(tasks.training_settings(request, TENANT))

    assert answer["provider"] == provider
    assert answer["settings"] == {"lr": 0.004, "hidden_sizes": [48, 24]}
    assert len(answer["rationale"]) == 2
    sent = fake.requests_for(model)[-1].text
    assert "hyperparameters.lr, model.hidden_sizes" in sent and "180" in sent
    assert backend.usage, "the call was accounted to the tenant"


def test_settings_out_of_bounds_or_missing_fall_back_to_the_local_rules(
    fake: FakeProvider, tmp_path: Path
) -> None:
    """Values outside the spec's bounds are refused with one repair; an answer without the
    values asked for is refused too; the local rules answer last."""
    tasks, _ = make_tasks(fake, tmp_path)
    fake.script("ec-gpt", Step(content='{"lr": 50}'), Step(content='{"lr": -1}'))
    fake.script("ec-claude", Step(content='{"lr": 0.002, "rationale": []}'))
    request = SETTINGS_REQUEST.model_copy(update={"provider": "ec-oa"})
    before = [len(fake.requests_for(m)) for m in ("ec-gpt", "ec-claude")]

    answer = asyncio.run(tasks.training_settings(request, TENANT))

    after = [len(fake.requests_for(m)) for m in ("ec-gpt", "ec-claude")]
    assert [a - b for a, b in zip(after, before, strict=True)] == [2, 1]
    assert answer["provider"] == "local"
    assert set(answer["settings"]) == {"lr", "hidden_sizes"}
    assert 0 < answer["settings"]["lr"] <= 1e-2
    assert len(answer["rationale"]) == 2
