"""The expert registry: model versions tagged with domains and example inputs, and routing.

Each domain's centroid is the normalised mean of the example embeddings of every expert
tagged with it. A query goes to the expert whose best domain is most similar to it, provided
that similarity reaches the domain's threshold (the lowest threshold among its experts);
otherwise to the generalist, if one is registered. Every decision is logged.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import select

from knowledge._tables import Expert, RoutingDecision
from knowledge.documents import check_domains
from knowledge.store import vector_bytes, vectors_of
from mlaas.db import session_scope
from mlaas.errors import ValidationError

DEFAULT_THRESHOLD = 0.3
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclass(frozen=True)
class ExpertInfo:
    id: str
    name: str
    model_version_id: str | None
    domains: list[str]
    examples: list[str]
    threshold: float
    generalist: bool
    example_vectors: np.ndarray

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "model_version_id": self.model_version_id,
                "domains": self.domains, "examples": len(self.examples),
                "threshold": self.threshold, "generalist": self.generalist}


def _info(row: Expert) -> ExpertInfo:
    vectors = vectors_of([row.example_embeddings[i : i + 1536]
                          for i in range(0, len(row.example_embeddings), 1536)])
    return ExpertInfo(row.id, row.name, row.model_version_id, list(row.domains),
                      list(row.examples), row.threshold, row.generalist, vectors)


def check_expert(name: str, domains: list[str], examples: list[str], generalist: bool,
                 threshold: float) -> list[str]:
    """Raise 422 with the reason an expert cannot be registered; returns the clean domains."""
    if not _NAME.match(name):
        raise ValidationError("name must be 1-100 characters of letters, digits, '.', '_', '-'",
                              details={"field": "name"})
    tags = check_domains(domains)
    if not generalist and not tags:
        raise ValidationError("a specialist expert needs at least one domain",
                              details={"field": "domains"})
    if not generalist and not [e for e in examples if e.strip()]:
        raise ValidationError("a specialist expert needs example inputs for its domain centroid",
                              details={"field": "examples"})
    if len(examples) > 200 or any(len(e) > 2000 for e in examples):
        raise ValidationError("at most 200 examples of up to 2000 characters",
                              details={"field": "examples"})
    if not 0.0 <= threshold <= 1.0:
        raise ValidationError("threshold must be a cosine similarity between 0 and 1",
                              details={"field": "threshold"})
    return tags


def register_expert(url: str, tenant_id: str, *, name: str, domains: list[str],
                    examples: list[str], vectors: np.ndarray, model_version_id: str | None,
                    threshold: float = DEFAULT_THRESHOLD, generalist: bool = False) -> ExpertInfo:
    """Register an expert, or re-tag the one of that name."""
    tags = check_expert(name, domains, examples, generalist, threshold)
    blob = b"".join(vector_bytes(v) for v in vectors)
    with session_scope(url) as session:
        row = session.scalar(select(Expert).where(Expert.tenant_id == tenant_id,
                                                  Expert.name == name))
        if row is None:
            row = Expert(id="exp_" + secrets.token_hex(8), tenant_id=tenant_id, name=name)
            session.add(row)
        row.domains, row.examples, row.example_embeddings = tags, list(examples), blob
        row.model_version_id, row.threshold = model_version_id, threshold
        row.generalist = generalist
        session.flush()
        return _info(row)


def list_experts(url: str, tenant_id: str) -> list[ExpertInfo]:
    with session_scope(url) as session:
        rows = session.scalars(select(Expert).where(Expert.tenant_id == tenant_id)
                               .order_by(Expert.name))
        return [_info(row) for row in rows]


def domain_centroids(experts: list[ExpertInfo]) -> dict[str, tuple[np.ndarray, float]]:
    """Per domain: unit centroid of its experts' examples, and its threshold."""
    grouped: dict[str, list[ExpertInfo]] = {}
    for expert in experts:
        for domain in expert.domains:
            if len(expert.example_vectors):
                grouped.setdefault(domain, []).append(expert)
    out = {}
    for domain, members in grouped.items():
        mean = np.concatenate([m.example_vectors for m in members]).mean(axis=0)
        out[domain] = (mean / max(float(np.linalg.norm(mean)), 1e-12),
                       min(m.threshold for m in members))
    return out


def rank_experts(experts: list[ExpertInfo], query: np.ndarray) -> list[dict[str, Any]]:
    """Specialists by their best domain's similarity to the query, best first."""
    centroids = domain_centroids(experts)
    sims = {d: float(c @ query) for d, (c, _) in centroids.items()}
    ranked = []
    for expert in experts:
        scored = [(sims[d], d) for d in expert.domains if d in sims]
        if not scored or expert.generalist:
            continue
        score, domain = max(scored)
        ranked.append({"expert": expert, "domain": domain, "score": round(score, 4),
                       "threshold": centroids[domain][1], "passes": score >= centroids[domain][1]})
    return sorted(ranked, key=lambda r: (-r["score"], r["expert"].name))


def route(url: str, tenant_id: str, query_text: str, query: np.ndarray) -> dict[str, Any]:
    """Choose an expert for a query, log the decision, and return it with the ranking."""
    experts = list_experts(url, tenant_id)
    ranked = rank_experts(experts, query)
    chosen = next((r for r in ranked if r["passes"]), None)
    fallback = chosen is None
    if fallback:
        generalist = next((e for e in experts if e.generalist), None)
        chosen = {"expert": generalist, "domain": None,
                  "score": ranked[0]["score"] if ranked else 0.0} if generalist else None
    decision_id = "route_" + secrets.token_hex(8)
    candidates = [{"expert": r["expert"].name, "domain": r["domain"], "score": r["score"],
                   "threshold": r["threshold"]} for r in ranked]
    with session_scope(url) as session:
        session.add(RoutingDecision(
            id=decision_id, tenant_id=tenant_id, query=query_text[:4000],
            expert_id=chosen["expert"].id if chosen else None,
            domain=chosen["domain"] if chosen else None,
            score=float(chosen["score"]) if chosen else 0.0, fallback=fallback,
            candidates=candidates))
    return {"decision_id": decision_id, "fallback": fallback, "candidates": candidates,
            "expert": chosen["expert"].public() if chosen else None,
            "domain": chosen["domain"] if chosen else None,
            "score": chosen["score"] if chosen else None}


def routing_log(url: str, tenant_id: str, limit: int = 100) -> list[dict[str, Any]]:
    with session_scope(url) as session:
        rows = session.scalars(select(RoutingDecision).where(
            RoutingDecision.tenant_id == tenant_id).order_by(
            RoutingDecision.created_at.desc()).limit(limit))
        return [{"id": r.id, "query": r.query, "expert_id": r.expert_id, "domain": r.domain,
                 "score": r.score, "fallback": r.fallback, "candidates": r.candidates,
                 "created_at": r.created_at.isoformat() + "Z"} for r in rows]
