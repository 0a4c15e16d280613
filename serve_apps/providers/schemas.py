"""Request and result shapes of the AI routes and the OpenAI-compatible chat route.

Request models validate at the HTTP boundary, so the router trusts what it is given. Result
models are the schemas structured outputs are validated against, whoever produced them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator

# ----- /v1/chat/completions (the OpenAI request fields we honour; others are ignored) -----


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        """The text of the message; content parts of type ``text`` are joined."""
        if isinstance(self.content, list):
            return "".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")
        return self.content or ""


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=200)
    messages: list[ChatMessage] = Field(min_length=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    n: Literal[1] = 1
    response_format: dict[str, Any] | None = None
    user: str | None = None

    def call_messages(self) -> list[dict[str, str]]:
        """Messages as role and text; ``developer`` is OpenAI's newer name for ``system``."""
        return [
            {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
            for m in self.messages
        ]

    def output_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def stop_list(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


# ----- /v1/ai/synthetic-data -----


class ColumnSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    type: Literal["numeric", "integer", "categorical", "boolean"] = "numeric"
    mean: float = 0.0
    std: float = Field(default=1.0, gt=0)
    min: float | None = None
    max: float | None = None
    categories: list[str] | None = None
    weights: list[float] | None = None


class TabularSchema(BaseModel):
    """Columns with their distributions; optional correlations among the numeric ones."""

    model_config = ConfigDict(extra="forbid")

    columns: list[ColumnSpec] = Field(min_length=1, max_length=200)
    target: str | None = None
    correlations: list[list[float]] | None = None


class QualityRequirements(BaseModel):
    model_config = ConfigDict(extra="allow")

    diversity: str | None = None
    realism: str | None = None
    balance: Literal["stratified", "balanced", "as_source"] = "stratified"


class SyntheticDataRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_description: str = Field(min_length=1, max_length=10_000)
    existing_data: str | list[dict[str, Any]] | None = Field(
        default=None, description="A description of the data, or rows to fit on"
    )
    data_schema: TabularSchema | None = None
    target_column: str | None = None
    target_count: int = Field(default=1000, ge=1, le=1_000_000)
    data_format: Literal["tabular"] = "tabular"
    quality_requirements: QualityRequirements = Field(default_factory=QualityRequirements)
    seed: int | None = None
    provider: str | None = Field(default=None, description="Prefer this provider")

    @field_validator("existing_data")
    @classmethod
    def _rows_not_empty(cls, value: Any) -> Any:
        if isinstance(value, list) and len(value) < 2:
            raise ValueError("send at least 2 rows to fit on")
        return value


class SyntheticRows(BaseModel):
    """The structured answer expected from an LLM provider asked for rows."""

    rows: list[dict[str, Any]] = Field(min_length=1)


# ----- /v1/ai/analyze -----


class AnalyzeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_description: str = Field(min_length=1, max_length=10_000)
    architecture: dict[str, Any] | None = None
    data_sample: str | None = Field(default=None, max_length=10_000)
    performance_metrics: dict[str, Any] | None = None
    provider: str | None = Field(default=None, description="Prefer this provider")


class LayerCheck(BaseModel):
    check: str
    passed: bool
    detail: str


class ArchitectureAssessment(BaseModel):
    strengths: list[str]
    weaknesses: list[str]
    overall_score: float = Field(ge=0, le=1)
    parameter_count: int | None = None
    layer_checks: list[LayerCheck] = Field(default_factory=list)


class PerformanceAnalysis(BaseModel):
    accuracy_assessment: str
    convergence_quality: str
    overfitting_risk: str
    signals: list[str] = Field(default_factory=list)


class Suggestion(BaseModel):
    """One change to make; ``component`` and ``rationale`` are optional for older answers."""

    category: str
    suggestion: str
    expected_improvement: str
    component: str | None = Field(
        default=None, description="The part of the model to change, e.g. attention_mechanism"
    )
    rationale: str | None = Field(default=None, description="What was found that calls for it")


class ModelAnalysis(BaseModel):
    """The schema every analysis is validated against, local or from an LLM."""

    architecture_assessment: ArchitectureAssessment
    performance_analysis: PerformanceAnalysis
    optimization_suggestions: list[Suggestion]
    expected_improvements: dict[str, float] | None = Field(
        default=None,
        description="Your estimate of each reported metric's change if the suggestions are "
        "applied (e.g. {\"accuracy\": 0.04}); omit it rather than guess",
    )


# ----- training settings (AI-enhanced training) -----

TunableField = Literal[
    "hyperparameters.lr",
    "hyperparameters.batch_size",
    "hyperparameters.weight_decay",
    "model.hidden_sizes",
    "model.hidden_size",
    "model.dropout",
]


class TrainingDataFacts(BaseModel):
    """What is known of the training split, measured by the job (no rows leave it here)."""

    rows: int = Field(ge=1)
    features: int = Field(ge=1)
    classes: int = Field(ge=1)
    majority_share: float = Field(ge=0, le=1, description="share of the largest class")


class TrainingSettingsRequest(BaseModel):
    """The settings a job spec left open, to be suggested for its model and data."""

    model_config = ConfigDict(extra="forbid")

    model_description: str = Field(min_length=1, max_length=10_000)
    model_type: Literal["mlp", "cnn"]
    data: TrainingDataFacts
    epochs: int = Field(ge=1)
    num_workers: int = Field(default=1, ge=1)
    open_fields: list[TunableField] = Field(min_length=1)
    provider: str | None = Field(default=None, description="Prefer this provider")


class TrainingSettings(BaseModel):
    """Suggested values; each is within the job spec's own bounds, and a field not asked for
    is ignored by the job. ``rationale`` says why, one line per value."""

    lr: float | None = Field(default=None, gt=0, le=1)
    batch_size: int | None = Field(default=None, ge=1, le=65_536)
    weight_decay: float | None = Field(default=None, ge=0, le=1)
    hidden_sizes: list[Annotated[int, Field(ge=1, le=65_536)]] | None = Field(
        default=None, min_length=1, max_length=8
    )
    hidden_size: int | None = Field(default=None, ge=1, le=65_536)
    dropout: float | None = Field(default=None, ge=0, lt=1)
    rationale: list[str] = Field(default_factory=list)


# ----- research (a part of /v1/ai/enhance) -----


class ResearchInsights(BaseModel):
    """The structured answer of a research provider; figures it does not know stay null."""

    latest_techniques: list[str] = Field(min_length=1)
    benchmarking_notes: list[str] = Field(default_factory=list)
    sota_accuracy: float | None = Field(
        default=None, ge=0, le=1, description="Best published accuracy on this task, if known"
    )
    industry_average: float | None = Field(
        default=None, ge=0, le=1, description="Typical accuracy in practice, if known"
    )
    sources: list[str] = Field(default_factory=list, description="Where the figures come from")


# ----- /v1/ai/enhance -----


EnhancementPart = Literal["architecture", "training", "data", "research"]


class EnhanceConfig(BaseModel):
    model_config = ConfigDict(extra="allow")

    optimization_focus: str | None = None
    performance_constraints: dict[str, Any] = Field(default_factory=dict)
    enhancement_scope: list[EnhancementPart] = Field(
        default_factory=lambda: list(get_args(EnhancementPart)),
        description="data: synthetic rows; architecture, training: the analysis. Research "
        "runs with every request (the documented answer carries it), listed or not",
    )


class EnhanceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_description: str = Field(min_length=1, max_length=10_000)
    training_data: str | list[dict[str, Any]] | None = None
    architecture: dict[str, Any] | None = None
    performance_metrics: dict[str, Any] | None = None
    config: EnhanceConfig = Field(default_factory=EnhanceConfig)
    synthetic_count: int = Field(default=500, ge=1, le=100_000)
    provider: str | None = Field(default=None, description="Prefer this provider for each part")


class TenantRef(BaseModel):
    """Who a router call is for, as the gateway authenticated it."""

    tenant_id: str
    tier: str = "free"
    endpoint: str = "/v1/chat/completions"
