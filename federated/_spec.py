"""The pool spec, and the checks that refuse parameters which cannot be secure.

Every refusal names the field and says how to fix it, e.g. "threshold must be more than half
of the 10 share holders (got 5); raise it to at least 6".

A secure pool states the fraction of its nodes that may collude with the server
(``corrupt_fraction``, γ) and that may drop out (``dropout_fraction``, δ). Full SecAgg then
needs ``2t > N + ⌊γN⌋`` (Bonawitz et al. 2017 with the consistency round; ``t >= ⌊2N/3⌋ + 1``
covers γ < 1/3), and SecAgg+ needs k and t within Bell et al. (2020)'s bounds (``_bounds``).

``aggregation: "clear"`` opts a pool out of secure aggregation: nodes send their clipped,
quantized, sample-weighted updates unmasked, so the server sees each node's update. Only such
a pool can score contributions on a validation set (``contribution_scoring``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic import ValidationError as PydanticValidationError

from federated._bounds import Population, smallest_neighbours, thresholds
from federated._quantize import max_aggregate
from federated.errors import PoolSpecError


class ModelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["mlp"] = "mlp"
    hidden_sizes: list[int] = Field(default_factory=lambda: [32], max_length=8)
    num_features: int = Field(ge=1, le=100_000)
    num_classes: int = Field(ge=2, le=10_000)
    feature_scale: float = Field(
        default=1.0, gt=0, description="inputs are divided by this before the first layer"
    )


class SecureAggregationSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    threshold: int | None = Field(
        default=None, ge=2,
        description="t: shares needed to rebuild a node's secrets (secure pools only)")
    neighbours: int | None = Field(
        default=None, ge=2, description="k of the SecAgg+ k-regular graph; None = everyone"
    )
    corrupt_fraction: float = Field(
        default=0.0, ge=0, lt=0.5,
        description="γ: fraction of the nodes assumed to collude with the server; 1/3 needs "
        "threshold >= ⌊2N/3⌋ + 1")
    dropout_fraction: float = Field(
        default=0.1, ge=0, lt=1,
        description="δ: fraction of the nodes that may drop out after sharing keys (SecAgg+ "
        "bounds)")
    clip_range: float = Field(default=0.5, gt=0, le=1e6)
    quantization_bits: int = Field(default=16, ge=1, le=32)
    modulus_bits: int = Field(default=32, ge=8, le=63)
    sample_cap: int = Field(default=1000, ge=1, le=10_000_000)
    aggregator_actors: int = Field(
        default=1, ge=1, le=64, description="Ray actors the masked vectors are split over"
    )


class PrivacySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    noise_multiplier: float = Field(default=1.0, ge=0.3, le=100)
    max_grad_norm: float = Field(default=1.0, gt=0, le=1e4)
    target_epsilon: float = Field(default=8.0, gt=0, le=100)
    delta: float = Field(default=1e-5, gt=0, lt=0.1)
    accountant: Literal["rdp", "prv"] = "rdp"


class LocalTrainingSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    local_epochs: int = Field(default=1, ge=1, le=100)
    batch_size: int = Field(default=32, ge=1, le=4096)
    lr: float = Field(default=0.1, gt=0, le=10)


class ContributionScoringSpec(BaseModel):
    """Leave-one-out scoring of each node's update on a validation set (clear pools only)."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["leave_one_out"] = "leave_one_out"
    validation_data: str = Field(
        min_length=1, max_length=500,
        description="builtin:<name>, or a CSV/Parquet file in the tenant's data folder")
    validation_target: str = Field(default="target", min_length=1, max_length=100)
    metric: Literal["log_loss", "accuracy"] = Field(
        default="log_loss", description="log_loss scores by the drop in cross-entropy")


class PoolSpec(BaseModel):
    """What a tenant asks for when creating a pool."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    model: ModelSpec
    rounds: int = Field(default=3, ge=1, le=10_000)
    min_nodes: int = Field(default=3, ge=2, le=10_000)
    target_nodes: int = Field(default=5, ge=2, le=10_000)
    round_deadline_s: float = Field(default=120.0, ge=2, le=86_400)
    aggregation: Literal["secure", "clear"] = Field(
        default="secure", description="clear: the pool opts out of secure aggregation and "
        "the server sees each node's update")
    secure_aggregation: SecureAggregationSpec
    contribution_scoring: ContributionScoringSpec | None = None
    privacy: PrivacySpec = Field(default_factory=PrivacySpec)
    training: LocalTrainingSpec = Field(default_factory=LocalTrainingSpec)

    @model_validator(mode="after")
    def _secure(self) -> PoolSpec:
        problem = security_problem(self)
        if problem is not None:
            raise ValueError(f"{problem[0]}: {problem[1]}")
        return self

    @property
    def clear(self) -> bool:
        """Whether the pool opted out of secure aggregation."""
        return self.aggregation == "clear"

    @property
    def holders(self) -> int:
        """How many nodes hold shares of each node's secrets in a full round."""
        k = self.secure_aggregation.neighbours
        return self.target_nodes if k is None else min(k + 1, self.target_nodes)


def security_problem(spec: PoolSpec) -> tuple[str, str] | None:
    """The first (field, reason) that makes the spec unusable or insecure, or None."""
    sa = spec.secure_aggregation
    if spec.target_nodes < spec.min_nodes:
        return "target_nodes", f"must be at least min_nodes ({spec.min_nodes}); raise it"
    if spec.contribution_scoring is not None and not spec.clear:
        return "contribution_scoring", (
            "needs each node's update, which secure aggregation hides; remove it, or set "
            'aggregation to "clear" (the server then sees every node\'s update)')
    if not spec.clear:
        problem = _secure_aggregation_problem(spec)
        if problem is not None:
            return problem
    bound = max_aggregate(nodes=spec.target_nodes, sample_cap=sa.sample_cap,
                          bits=sa.quantization_bits)
    if bound >= 1 << sa.modulus_bits:
        needed = bound.bit_length()
        return "secure_aggregation.modulus_bits", (
            f"2**{sa.modulus_bits} is too small for {spec.target_nodes} nodes x sample_cap "
            f"{sa.sample_cap} x {sa.quantization_bits}-bit values (sum up to {bound}); use "
            f"modulus_bits >= {needed}, or lower sample_cap, quantization_bits or target_nodes"
        )
    return None


def _secure_aggregation_problem(spec: PoolSpec) -> tuple[str, str] | None:
    """The threshold and neighbour checks of a pool that aggregates securely."""
    sa = spec.secure_aggregation
    if sa.threshold is None:
        return "secure_aggregation.threshold", (
            f"is required for secure aggregation; set it to more than half of the "
            f"{spec.holders} share holders")
    if sa.neighbours is not None and sa.neighbours % 2:
        return "secure_aggregation.neighbours", f"must be even (got {sa.neighbours})"
    if sa.neighbours is not None and sa.neighbours + 1 > spec.min_nodes:
        return "secure_aggregation.neighbours", (
            f"k + 1 = {sa.neighbours + 1} is more than min_nodes ({spec.min_nodes}); "
            "lower k or raise min_nodes"
        )
    holders = spec.holders
    if 2 * sa.threshold <= holders:
        return "secure_aggregation.threshold", (
            f"must be more than half of the {holders} share holders (got {sa.threshold}); "
            f"raise it to at least {holders // 2 + 1}, or a minority could unmask a node"
        )
    smallest = spec.min_nodes if sa.neighbours is None else sa.neighbours + 1
    if sa.threshold > smallest:
        return "secure_aggregation.threshold", (
            f"is more than the {smallest} holders a round can have (got {sa.threshold}); "
            "lower it or raise min_nodes"
        )
    if sa.neighbours is None:
        return _collusion_problem(spec)
    return _secagg_plus_problem(spec)


def _collusion_problem(spec: PoolSpec) -> tuple[str, str] | None:
    """Full SecAgg: two survivor sets can each get t signatures unless 2t > N + corrupt."""
    sa, n = spec.secure_aggregation, spec.target_nodes
    assert sa.threshold is not None
    corrupt = Population(n, sa.dropout_fraction, sa.corrupt_fraction).corrupt
    if 2 * sa.threshold > n + corrupt:
        return None
    return "secure_aggregation.threshold", (
        f"must be more than half of {n} nodes plus the {corrupt} assumed corrupt "
        f"(corrupt_fraction {sa.corrupt_fraction:g}; got {sa.threshold}); raise it to at least "
        f"{(n + corrupt) // 2 + 1} (⌊2N/3⌋ + 1 = {2 * n // 3 + 1} covers any γ < 1/3)")


def _signers_problem(spec: PoolSpec) -> tuple[str, str] | None:
    """SecAgg+: a round of min_nodes, after its dropouts, must still have enough signers
    for the consistency round (more than half of target_nodes plus the corrupt ones)."""
    sa = spec.secure_aggregation
    needed = signatures_needed(spec.model_dump())
    survivors = spec.min_nodes - Population(spec.min_nodes, sa.dropout_fraction, 0.0).dropped
    if survivors >= needed:
        return None
    return "min_nodes", (
        f"a round of {spec.min_nodes} nodes keeps {survivors} after {sa.dropout_fraction:g} "
        f"dropout, fewer than the {needed} that must sign the survivor set (more than half "
        f"of {spec.target_nodes} nodes plus the corrupt ones); raise min_nodes towards "
        "target_nodes")


def _secagg_plus_problem(spec: PoolSpec) -> tuple[str, str] | None:
    """k and t within Bell et al. (2020)'s bounds for the pool's size, δ and γ."""
    sa, n = spec.secure_aggregation, spec.target_nodes
    assert sa.neighbours is not None and sa.threshold is not None
    pop = Population(n, sa.dropout_fraction, sa.corrupt_fraction)
    if sa.neighbours >= n - 1:
        return _collusion_problem(spec)
    fine = thresholds(pop, sa.neighbours)
    if sa.threshold in fine:
        return _signers_problem(spec)
    terms = f"{n} nodes, {sa.dropout_fraction:g} dropout, {sa.corrupt_fraction:g} corrupt"
    if fine:
        return "secure_aggregation.threshold", (
            f"with {sa.neighbours} neighbours must be in {fine.start}..{fine.stop - 1} for "
            f"{terms} (Bell et al. 2020; got {sa.threshold}); set it in that range")
    least = smallest_neighbours(pop)
    if least is None:
        return "secure_aggregation.neighbours", (
            f"no neighbour count below {n - 1} meets Bell et al. (2020)'s bounds for {terms}; "
            "drop neighbours for full SecAgg")
    return "secure_aggregation.neighbours", (
        f"neighbours must be ≥ {least[0]} for {terms} (Bell et al. 2020; got "
        f"{sa.neighbours}); set neighbours: {least[0]} with threshold: {least[1]}, or drop it "
        "for full SecAgg")


def signatures_needed(spec: dict[str, Any]) -> int:
    """How many of a round's nodes must sign the survivor set before a node reveals shares:
    more than half of ``target_nodes`` plus the corrupt ones, so that two different sets can
    never both be signed (honest nodes sign once), and never fewer than t. In full SecAgg
    the spec's t already is that many; SecAgg+'s t is smaller."""
    sa = spec["secure_aggregation"]
    pop = Population(int(spec["target_nodes"]), float(sa.get("dropout_fraction", 0.1)),
                     float(sa.get("corrupt_fraction", 0.0)))
    return max(int(sa.get("threshold") or 2), (pop.nodes + pop.corrupt) // 2 + 1)


def parse_pool_spec(raw: Any) -> PoolSpec:
    """A checked spec, or ``PoolSpecError`` naming the first bad field and how to fix it."""
    try:
        return PoolSpec.model_validate(raw)
    except PydanticValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first.get("loc", ())) or "spec"
        message = str(first.get("msg", "invalid"))
        if message.startswith("Value error, "):
            message = message.removeprefix("Value error, ")
            if ": " in message:
                field, message = message.split(": ", 1)
        raise PoolSpecError(field, message) from None
