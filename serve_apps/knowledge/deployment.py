"""The ``KnowledgePool`` deployment: one replica holds every tenant's index and graph.

One replica on purpose: the index and graph are in-process state that writes must see at
once; a pool grows past one process through its shard actors, not through more replicas.
Blocking work (encoding, FAISS, SQLite) runs in threads so queries proceed during ingests.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel, Field
from ray import serve

from knowledge import (
    ChunkingConfig,
    DocumentInput,
    EncoderPool,
    IndexPolicy,
    KnowledgePool,
    graphml,
    node_link,
    render_svg,
)
from knowledge.answer import answer_messages, cited_results
from knowledge.experts import routing_log
from knowledge.settings import KnowledgeSettings
from knowledge.store import list_documents
from mlaas.cluster_mode import require_cluster_ready_in_replica
from mlaas.placement import platform_actor_options
from mlaas.settings import Settings


class KnowledgeArgs(BaseModel):
    """Application arguments (``args:`` of the ``knowledge`` app in the Serve config)."""

    settings: dict[str, Any] = Field(default_factory=dict, description="Overrides of MLAAS_")
    encoder_actors: int = Field(default=2, ge=1, description="MiniLM actors of the ingest pool")
    encoder_num_cpus: float = Field(default=0.1, gt=0)
    encoder_batch_size: int = Field(default=32, ge=1)
    flat_max: int = Field(default=20_000, ge=1, description="Exact index below this many vectors")
    max_document_chars: int = Field(default=1_000_000, ge=1)
    index_shards: int | None = Field(
        default=None, ge=1, le=64,
        description="Index shard actors per tenant; default MLAAS_KNOWLEDGE_INDEX_SHARDS, else 1",
    )


@serve.deployment(name="KnowledgePool", ray_actor_options={"num_cpus": 0.1},
                  max_ongoing_requests=32)
class KnowledgeService:
    """Ingest, delete, query, graph views and expert routing, per tenant."""

    def __init__(self, args: dict[str, Any] | None = None) -> None:
        parsed = KnowledgeArgs.model_validate(args or {})
        settings = Settings(**parsed.settings)
        # Its rows live in the database and its index snapshots in the storage.
        require_cluster_ready_in_replica(settings, checks=("database", "storage"))
        placement = platform_actor_options(settings)
        self.encoder = EncoderPool(actors=parsed.encoder_actors, num_cpus=parsed.encoder_num_cpus,
                                   batch_size=parsed.encoder_batch_size, placement=placement)
        self.pool = KnowledgePool(
            database_url=settings.resolved_database_url, home=settings.home,
            encoder=self.encoder, policy=IndexPolicy(flat_max=parsed.flat_max),
            max_document_chars=parsed.max_document_chars,
            settings=KnowledgeSettings(**(
                {"index_shards": parsed.index_shards} if parsed.index_shards else {})),
            snapshots=_shared_storage(settings), shard_placement=placement)

    async def ingest(self, tenant_id: str, documents: list[dict[str, Any]],
                     chunk_size: int, chunk_overlap: int) -> list[dict[str, Any]]:
        docs = [DocumentInput(**d) for d in documents]
        chunking = ChunkingConfig(size=chunk_size, overlap=chunk_overlap)
        results = await asyncio.to_thread(self.pool.ingest, tenant_id, docs, chunking)
        return [r.__dict__ for r in results]

    async def delete(self, tenant_id: str, document_id: str) -> int:
        return await asyncio.to_thread(self.pool.delete, tenant_id, document_id)

    async def documents(self, tenant_id: str) -> list[dict[str, Any]]:
        docs = await asyncio.to_thread(list_documents, self.pool.url, tenant_id)
        return [d.__dict__ for d in docs]

    async def query(self, tenant_id: str, text: str, k: int, domains: list[str] | None,
                    expand: bool | None, mode: str = "hybrid") -> dict[str, Any]:
        return await asyncio.to_thread(self.pool.query, tenant_id, text, k, domains=domains,
                                       expand=expand, mode=mode)

    async def answer_messages(self, text: str, results: list[dict[str, Any]]) -> list[Any]:
        return answer_messages(text, results)

    async def cite_answer(self, tenant_id: str, query_id: str, answer: str,
                          results: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The sources an answer cites; their contributors are credited."""
        cited = cited_results(answer, results)
        await asyncio.to_thread(self.pool.credit_citations, tenant_id, query_id, cited)
        return cited

    async def contributors(self, tenant_id: str) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.pool.contributors, tenant_id)

    async def stats(self, tenant_id: str) -> dict[str, Any]:
        return await asyncio.to_thread(self.pool.stats, tenant_id)

    async def graph(self, tenant_id: str, concept: str | None, depth: int, fmt: str) -> Any:
        def view() -> Any:
            sub = self.pool.graph_view(tenant_id, concept, depth)
            if fmt == "graphml":
                return graphml(sub)
            if fmt == "svg":
                center = f"concept:{concept.strip().lower()}" if concept else None
                return render_svg(sub, center=center)
            return node_link(sub)

        return await asyncio.to_thread(view)

    async def register_expert(self, tenant_id: str, spec: dict[str, Any]) -> dict[str, Any]:
        return await asyncio.to_thread(lambda: self.pool.register_expert(tenant_id, **spec))

    async def experts(self, tenant_id: str) -> list[dict[str, Any]]:
        from knowledge.experts import list_experts

        found = await asyncio.to_thread(list_experts, self.pool.url, tenant_id)
        return [e.public() for e in found]

    async def route(self, tenant_id: str, text: str) -> dict[str, Any]:
        return await asyncio.to_thread(self.pool.route, tenant_id, text)

    async def decisions(self, tenant_id: str, limit: int) -> list[dict[str, Any]]:
        return await asyncio.to_thread(routing_log, self.pool.url, tenant_id, limit)

    async def reload(self, tenant_id: str | None = None) -> None:
        """Forget loaded state so it is read back from disk (used after a repair, and by tests)."""
        await asyncio.to_thread(self.pool.forget, tenant_id)


def app_builder(args: dict[str, Any]) -> Any:
    return KnowledgeService.bind(args)  # type: ignore[attr-defined]


def _shared_storage(settings: Any) -> Any:
    """The platform storage when every node reaches it (S3, or a file:// declared shared),
    where the pool keeps its index snapshots; None keeps them on this node only."""
    from mlaas.storage import get_storage

    storage = get_storage(settings)
    return storage if not storage.is_local() or settings.storage_shared else None
