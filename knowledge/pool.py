"""The knowledge pool of one process: every tenant's index, graph and rows, kept consistent.

State per tenant lives under ``<home>/knowledge/<tenant id>/`` (``index.faiss`` and its
``index.json``, ``lexical.json``, ``graph.json``) and in the database (documents, chunks with
their section paths, texts and embeddings). At first use a tenant's indexes and graph are
read back; a missing, corrupt or stale file is rebuilt from the stored embeddings, texts and
concepts; if even that fails the tenant's knowledge
routes answer 503 until it is repaired, never wrong results. With ``index_shards`` above 1
(``MLAAS_KNOWLEDGE_INDEX_SHARDS``) a tenant's index is a ``ShardedIndex`` over that many
actors instead, filled from the stored embeddings at first use and never written to a file
(the lexical index stays in the pool's process either way).

With ``snapshots`` (the platform storage when it is shared by the nodes: S3, or a file://
declared shared), each write of a tenant's files is also uploaded to ``knowledge/<tenant>/``
of the storage, and a replica on a node that has no files yet starts from that snapshot
instead of re-indexing every stored embedding.
"""

from __future__ import annotations

import functools
import secrets
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from knowledge import store
from knowledge.chunking import Chunk, ChunkingConfig, chunk_document, content_hash
from knowledge.documents import DocumentInput, check_batch, check_document, check_domains, check_k
from knowledge.encoder import EncodedChunk
from knowledge.errors import KnowledgeUnavailableError
from knowledge.experts import DEFAULT_THRESHOLD, check_expert, register_expert, route
from knowledge.graph import ConceptGraph
from knowledge.index import IndexPolicy, VectorIndex
from knowledge.lexical import LexicalIndex
from knowledge.retrieval import QueryOptions, hybrid_search
from knowledge.settings import KnowledgeSettings
from knowledge.sharding import ShardedIndex
from mlaas import rewards
from mlaas.errors import ValidationError
from mlaas.logs import get_logger
from mlaas.storage import MANIFEST, Storage, StorageError

log = get_logger("mlaas.knowledge")
RETURNED_CREDIT = 1.0
CITED_CREDIT = 2.0
ROUTED_CREDIT = 1.0


class Encoder(Protocol):
    def encode_chunks(self, texts: list[str]) -> list[EncodedChunk]: ...
    def embed(self, texts: list[str]) -> np.ndarray: ...


@dataclass
class TenantState:
    index: VectorIndex | ShardedIndex
    graph: ConceptGraph
    lexical: LexicalIndex
    lock: threading.RLock = field(default_factory=threading.RLock)
    recovered: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class IngestResult:
    document_id: str
    title: str
    status: str  # "created" or "unchanged"
    chunks: int


def _unchanged(existing: store.DocumentInfo) -> IngestResult:
    return IngestResult(existing.id, existing.title, "unchanged", existing.chunk_count)


class KnowledgePool:
    """Ingest, delete and query, per tenant, over one encoder and one database."""

    def __init__(self, *, database_url: str, home: Path, encoder: Encoder,
                 policy: IndexPolicy | None = None, max_document_chars: int = 1_000_000,
                 settings: KnowledgeSettings | None = None,
                 snapshots: Storage | None = None,
                 shard_placement: dict[str, Any] | None = None) -> None:
        self.url = database_url
        self.shard_placement = shard_placement  # extra options of the shard actors
        self.snapshots = snapshots
        self.settings = settings or KnowledgeSettings()
        self.root = home / "knowledge"
        self.encoder = encoder
        self.policy = policy or IndexPolicy()
        self.max_document_chars = max_document_chars
        self._tenants: dict[str, TenantState] = {}
        self._broken: dict[str, str] = {}
        self._lock = threading.Lock()

    # -- state ---------------------------------------------------------------------------
    def _paths(self, tenant_id: str) -> tuple[Path, Path]:
        folder = self.root / tenant_id
        return folder / "index.faiss", folder / "graph.json"

    def _lexical_path(self, tenant_id: str) -> Path:
        return self.root / tenant_id / "lexical.json"

    def tenant(self, tenant_id: str) -> TenantState:
        """The tenant's loaded state (read back or rebuilt on first use).

        Raises:
            KnowledgeUnavailableError: when neither the files nor the rows can be read.
        """
        with self._lock:
            if tenant_id in self._broken:
                raise KnowledgeUnavailableError(self._broken[tenant_id])
            state = self._tenants.get(tenant_id)
            if state is None:
                try:
                    state = self._load(tenant_id)
                except Exception as exc:
                    self._broken[tenant_id] = f"knowledge state cannot be loaded: {exc}"
                    raise KnowledgeUnavailableError(self._broken[tenant_id]) from exc
                self._tenants[tenant_id] = state
            return state

    def _snapshot_key(self, tenant_id: str) -> str:
        return f"knowledge/{tenant_id}"

    def _restore_snapshot(self, tenant_id: str, index_path: Path) -> None:
        """Bring the tenant's files from the storage when this node has none (best effort:
        whatever is missing or stale is rebuilt from the database right after)."""
        if self.snapshots is None or index_path.exists():
            return
        try:
            folder = self.snapshots.fetch_folder(self._snapshot_key(tenant_id),
                                                 cache_id=f"knowledge-{tenant_id}")
            index_path.parent.mkdir(parents=True, exist_ok=True)
            for item in folder.iterdir():
                if item.is_file() and item.name != MANIFEST:
                    shutil.copy2(item, index_path.parent / item.name)
        except (StorageError, OSError) as exc:
            log.info("no knowledge snapshot", extra={"fields": {"tenant": tenant_id,
                                                                 "reason": str(exc)[:200]}})

    def _upload_snapshot(self, tenant_id: str) -> None:
        if self.snapshots is None:
            return
        try:
            self.snapshots.upload_folder(self.root / tenant_id, self._snapshot_key(tenant_id))
        except OSError as exc:  # the local files are written; the next write uploads again
            log.warning("knowledge snapshot upload failed", extra={"fields": {
                "tenant": tenant_id, "reason": str(exc)[:200]}})

    def _load(self, tenant_id: str) -> TenantState:
        index_path, graph_path = self._paths(tenant_id)
        if self.settings.index_shards <= 1:
            self._restore_snapshot(tenant_id, index_path)
        expected = store.chunk_count(self.url, tenant_id)
        recovered: list[str] = []
        if self.settings.index_shards > 1:
            index: VectorIndex | ShardedIndex = self._sharded_index(tenant_id)
        else:
            index = self._file_index(tenant_id, index_path, expected, recovered)
        try:
            graph = ConceptGraph.load(graph_path)
            documents = len(store.list_documents(self.url, tenant_id))
            if graph.document_count() != documents:
                raise RuntimeError(f"graph holds {graph.document_count()} documents, "
                                   f"database {documents}")
        except Exception as exc:
            if graph_path.exists() or expected:
                recovered.append(f"graph rebuilt from stored concepts ({exc})")
            graph = self._rebuilt_graph(tenant_id)
        lexical = self._lexical_index(tenant_id, recovered)
        state = TenantState(index=index, graph=graph, lexical=lexical, recovered=recovered)
        if recovered:
            self._persist(tenant_id, state)
        index.on_rebuilt = lambda: self._persist_after_rebuild(tenant_id, state)
        index.maybe_rebuild(self._snapshot(tenant_id))  # e.g. the policy changed meanwhile
        return state

    def _file_index(self, tenant_id: str, index_path: Path, expected: int,
                    recovered: list[str]) -> VectorIndex:
        try:
            index = VectorIndex.load(index_path, self.policy)
            if index.size != expected:
                raise RuntimeError(f"index holds {index.size} vectors, database {expected}")
            return index
        except Exception as exc:
            if index_path.exists() or expected:
                recovered.append(f"index rebuilt from stored embeddings ({exc})")
                log.warning("rebuilding knowledge index", extra={"fields": {
                    "tenant": tenant_id, "reason": str(exc)}})
            return self._rebuilt_index(tenant_id)

    def _lexical_index(self, tenant_id: str, recovered: list[str]) -> LexicalIndex:
        """The saved lexical index when it holds exactly the stored chunks, else rebuilt
        from their texts."""
        path = self._lexical_path(tenant_id)
        stored = store.chunk_ids(self.url, tenant_id)
        try:
            lexical = LexicalIndex.load(path)
            if lexical.ids() != stored:
                raise RuntimeError(f"lexical index holds {lexical.size} chunks, database "
                                   f"{len(stored)} (or other ones)")
            return lexical
        except RuntimeError as exc:
            if path.exists() or stored:
                recovered.append(f"lexical index rebuilt from stored texts ({exc})")
            lexical = LexicalIndex()
            lexical.add(*store.chunk_texts(self.url, tenant_id))
            return lexical

    def _sharded_index(self, tenant_id: str) -> ShardedIndex:
        index = ShardedIndex(self.settings.index_shards, policy=self.policy,
                             num_cpus=self.settings.shard_num_cpus,
                             placement=self.shard_placement)
        ids, vectors = store.embeddings(self.url, tenant_id)
        if len(ids):
            index.add(ids, vectors)
        return index

    def _persist_after_rebuild(self, tenant_id: str, state: TenantState) -> None:
        with state.lock:
            self._persist(tenant_id, state)

    def _rebuilt_index(self, tenant_id: str) -> VectorIndex:
        from knowledge.index import build_index

        ids, vectors = store.embeddings(self.url, tenant_id)
        factory = self.policy.factory_for(len(ids))
        return VectorIndex(self.policy, index=build_index(factory, ids, vectors, self.policy),
                           factory=factory)

    def _rebuilt_graph(self, tenant_id: str) -> ConceptGraph:
        graph = ConceptGraph()
        by_doc: dict[str, list[Any]] = {}
        for chunk_id, doc_id, (phrases, pairs) in store.chunk_concepts(self.url, tenant_id):
            by_doc.setdefault(doc_id, []).append((chunk_id, phrases, pairs))
        docs = store.documents_by_id(self.url, tenant_id, set(by_doc))
        for doc_id, chunks in by_doc.items():
            doc = docs[doc_id]
            graph.add_document(doc_id, title=doc.title, contributor=doc.contributor,
                               domains=doc.domains, chunks=chunks)
        from knowledge.experts import list_experts

        for expert in list_experts(self.url, tenant_id):
            graph.set_expert(expert.name, expert.domains)
        return graph

    def _persist(self, tenant_id: str, state: TenantState) -> None:
        index_path, graph_path = self._paths(tenant_id)
        state.index.save(index_path)
        state.lexical.save(self._lexical_path(tenant_id))
        state.graph.save(graph_path)
        self._upload_snapshot(tenant_id)

    def _snapshot(self, tenant_id: str) -> Any:
        return functools.partial(store.embeddings, self.url, tenant_id)  # pickles, for shards

    def forget(self, tenant_id: str | None = None) -> None:
        """Drop loaded state (all tenants, or one) so the next use reads it back from disk."""
        with self._lock:
            for key in [tenant_id] if tenant_id else list(self._tenants):
                state = self._tenants.pop(key, None)
                if state is not None:
                    state.index.wait_for_rebuild()
                    if isinstance(state.index, ShardedIndex):
                        state.index.close()
                self._broken.pop(key, None)

    # -- writes --------------------------------------------------------------------------
    def ingest(self, tenant_id: str, docs: list[DocumentInput],
               chunking: ChunkingConfig | None = None) -> list[IngestResult]:
        """Chunk, encode and index documents; a document whose content is already in the
        pool is reported ``unchanged`` and costs nothing. The chunks of every new document
        of the call are encoded together, so batches fill and spread over the actors."""
        chunking = chunking or ChunkingConfig()
        check_batch(docs)
        for i, doc in enumerate(docs):
            check_document(doc, i, self.max_document_chars)
        state = self.tenant(tenant_id)
        results: list[IngestResult | None] = [None] * len(docs)
        plans: list[tuple[int, str, list[Chunk]]] = []
        for i, doc in enumerate(docs):
            digest = content_hash(doc.content)
            existing = store.document_by_hash(self.url, tenant_id, digest)
            if existing is not None:
                results[i] = _unchanged(existing)
                continue
            chunks = chunk_document(doc.content, doc.content_type, chunking)
            if not chunks:
                raise ValidationError(f"documents[{i}]: no text left after parsing", details={
                    "field": f"documents[{i}].content", "reason": "empty"})
            plans.append((i, digest, chunks))
        encoded = self.encoder.encode_chunks(
            [c.indexed_text for _, _, chunks in plans for c in chunks])
        start = 0
        for i, digest, chunks in plans:
            part = encoded[start : start + len(chunks)]
            start += len(chunks)
            results[i] = self._write(tenant_id, state, docs[i], digest, chunks, part)
        state.index.maybe_rebuild(self._snapshot(tenant_id))
        with state.lock:
            self._persist(tenant_id, state)
        return [r for r in results if r is not None]

    def _write(self, tenant_id: str, state: TenantState, doc: DocumentInput, digest: str,
               chunks: list[Chunk], encoded: list[EncodedChunk]) -> IngestResult:
        title = doc.title or doc.source or f"document {digest[:8]}"
        meta = {"content_hash": digest, "title": title[:300], "source": doc.source[:1000],
                "content_type": doc.content_type, "contributor": doc.contributor,
                "domains": check_domains(doc.domains)}
        with state.lock:  # encoded outside the lock; written once, whoever finished first
            existing = store.document_by_hash(self.url, tenant_id, digest)
            if existing is not None:
                return _unchanged(existing)
            info, ids = store.add_document(self.url, tenant_id, meta, chunks, encoded)
            state.index.add(np.array(ids, dtype=np.int64), np.stack([e.vector for e in encoded]))
            state.lexical.add(ids, [c.indexed_text for c in chunks])
            state.graph.add_document(
                info.id, title=info.title, contributor=info.contributor, domains=info.domains,
                chunks=[(cid, e.phrases, e.pairs) for cid, e in zip(ids, encoded, strict=True)])
        return IngestResult(info.id, info.title, "created", len(chunks))

    def delete(self, tenant_id: str, document_id: str) -> int:
        """Remove a document's rows, vectors, terms and graph edges; returns the chunks
        removed."""
        state = self.tenant(tenant_id)
        with state.lock:
            ids = store.delete_document(self.url, tenant_id, document_id)
            state.index.remove(np.array(ids, dtype=np.int64))
            state.lexical.remove(ids)
            state.graph.remove_document(document_id)
            state.index.maybe_rebuild(self._snapshot(tenant_id))
            self._persist(tenant_id, state)
        return len(ids)

    # -- reads ---------------------------------------------------------------------------
    def known_domains(self, tenant_id: str) -> set[str]:
        from knowledge.experts import list_experts

        experts = {d for e in list_experts(self.url, tenant_id) for d in e.domains}
        return store.document_domains(self.url, tenant_id) | experts

    def query(self, tenant_id: str, text: str, k: int = 5, *, domains: list[str] | None = None,
              expand: bool | None = None, mode: str = "hybrid") -> dict[str, Any]:
        """Cited chunks for a question; contributors of returned chunks are credited.

        ``mode`` picks the signals (``hybrid``, ``dense`` or ``lexical``); ``expand`` adds the
        concept graph (``None``: the default, off).
        """
        check_k(k)
        options = QueryOptions(mode=mode, expand=QueryOptions.expand if expand is None
                               else expand)
        if not text.strip():
            raise ValidationError("query must not be blank", details={"field": "query"})
        allowed = None
        if domains:
            wanted = set(check_domains(domains))
            unknown = sorted(wanted - self.known_domains(tenant_id))
            if unknown:
                raise ValidationError(f"Unknown domain(s) {unknown} in this tenant's pool",
                                      details={"field": "domains", "unknown": unknown})
            allowed = store.chunk_ids_in_domains(self.url, tenant_id, wanted)
        state = self.tenant(tenant_id)
        vector = self.encoder.embed([text])[0]
        with state.lock:  # the graph is read while no write changes it (writes are short)
            hits = hybrid_search(state.index, state.lexical, state.graph, self.url, tenant_id,
                                 vector, text, k, options, allowed=allowed)
        query_id = "q_" + secrets.token_hex(8)
        results = self._cite(tenant_id, hits)
        rewards.credit(self.url, tenant_id, "knowledge", [
            rewards.Credit(r["contributor"], RETURNED_CREDIT, "returned",
                           f"{query_id}:{r['chunk_id']}")
            for r in results])
        return {"query_id": query_id, "query": text, "k": k, "mode": options.mode,
                "expand": options.expand, "index": state.index.factory, "results": results}

    def credit_citations(self, tenant_id: str, query_id: str,
                         cited: list[dict[str, Any]]) -> int:
        """Credit the contributors of chunks a generated answer cited (once per query)."""
        return rewards.credit(self.url, tenant_id, "knowledge", [
            rewards.Credit(c["contributor"], CITED_CREDIT, "cited", f"{query_id}:{c['chunk_id']}")
            for c in cited])

    def _cite(self, tenant_id: str, hits: list[Any]) -> list[dict[str, Any]]:
        infos = store.chunks_by_id(self.url, tenant_id, [c.chunk_id for c, _ in hits])
        docs = store.documents_by_id(self.url, tenant_id, {i.document_id for i in infos.values()})
        results = []
        for rank, (cand, score) in enumerate(hits, start=1):
            info = infos.get(cand.chunk_id)
            if info is None:  # deleted between search and read
                continue
            doc = docs[info.document_id]
            results.append({
                "rank": rank, "score": round(float(score), 4), "chunk_id": cand.chunk_id,
                "document": {"id": doc.id, "title": doc.title, "source": doc.source},
                "chunk": {"ordinal": info.ordinal, "text": info.text,
                          "section": info.section},
                "contributor": info.contributor, "domains": info.domains,
                "concepts": [p for p, _ in info.concepts], "why": cand.why(),
            })
        return results

    def stats(self, tenant_id: str) -> dict[str, Any]:
        state = self.tenant(tenant_id)
        return {"documents": len(store.list_documents(self.url, tenant_id)),
                "chunks": state.index.size, "index": state.index.factory,
                "lexical_chunks": state.lexical.size,
                "rebuilding": state.index.rebuilding,
                "graph_nodes": state.graph.g.number_of_nodes(),
                "graph_edges": state.graph.g.number_of_edges(), "recovered": state.recovered}

    # -- experts, contributors, graph ------------------------------------------------------
    def register_expert(self, tenant_id: str, *, name: str, domains: list[str],
                        examples: list[str], model_version_id: str | None = None,
                        threshold: float = DEFAULT_THRESHOLD,
                        generalist: bool = False) -> dict[str, Any]:
        """Register (or re-tag) an expert; its domains get ``expert_in`` edges in the graph."""
        check_expert(name, domains, examples, generalist, threshold)
        if model_version_id is not None:
            from mlaas.model_store import version_by_id

            version_by_id(self.url, tenant_id, model_version_id)  # 404 unless the tenant's
        texts = [e for e in examples if e.strip()]
        vectors = self.encoder.embed(texts) if texts else np.empty((0, 384), np.float32)
        info = register_expert(self.url, tenant_id, name=name, domains=domains, examples=texts,
                               vectors=vectors, model_version_id=model_version_id,
                               threshold=threshold, generalist=generalist)
        state = self.tenant(tenant_id)
        with state.lock:
            state.graph.set_expert(info.name, info.domains)
            state.graph.save(self._paths(tenant_id)[1])
            self._upload_snapshot(tenant_id)
        return info.public()

    def route(self, tenant_id: str, text: str) -> dict[str, Any]:
        """The expert for a query (logged); the chosen expert is credited."""
        if not text.strip():
            raise ValidationError("query must not be blank", details={"field": "query"})
        decision = route(self.url, tenant_id, text, self.encoder.embed([text])[0])
        if decision["expert"] is not None:
            rewards.credit(self.url, tenant_id, "knowledge", [rewards.Credit(
                f"expert:{decision['expert']['name']}", ROUTED_CREDIT, "routed",
                decision["decision_id"])])
        return decision

    def contributors(self, tenant_id: str) -> list[dict[str, Any]]:
        """Knowledge credits per contributor of this tenant, with their document counts."""
        docs: dict[str, int] = {}
        for doc in store.list_documents(self.url, tenant_id):
            docs[doc.contributor] = docs.get(doc.contributor, 0) + 1
        rows = [{"contributor": b.contributor, "credits": b.credits, "entries": b.entries,
                 "documents": docs.pop(b.contributor, 0)}
                for b in rewards.balances(self.url, tenant_id, source="knowledge")]
        rows += [{"contributor": c, "credits": 0.0, "entries": 0, "documents": n}
                 for c, n in sorted(docs.items())]
        return rows

    def graph_view(self, tenant_id: str, concept: str | None, depth: int) -> Any:
        """The neighbourhood of a concept (or of the most connected one) as a NetworkX graph."""
        if not 0 <= depth <= 4:
            raise ValidationError("depth must be 0-4", details={"field": "depth"})
        state = self.tenant(tenant_id)
        with state.lock:
            return self._neighbourhood(state.graph, concept, depth)

    @staticmethod
    def _neighbourhood(graph: ConceptGraph, concept: str | None, depth: int) -> Any:
        if concept:
            node = concept if ":" in concept else f"concept:{concept.strip().lower()}"
            if node not in graph.g:
                from mlaas.errors import NotFoundError

                raise NotFoundError(f"No concept {concept!r} in this pool",
                                    details={"concept": concept})
        else:
            top = graph.top_concepts(1)
            if not top:
                return graph.neighbourhood("", 0)
            node = top[0]
        return graph.neighbourhood(node, depth)
