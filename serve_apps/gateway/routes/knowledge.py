"""``/v1/knowledge``: ingest and delete documents, hybrid queries with citations, contributor
credits, the concept graph (JSON, GraphML, SVG) and a page that draws it. The pool itself is
the ``knowledge`` Serve application; every call carries the caller's tenant id. The tier caps
how many documents a tenant keeps. Each new document ingested (content already in the pool is
free) and each query count one ``knowledge_requests`` against its monthly quota."""

from __future__ import annotations

import hashlib
from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from mlaas import work_limits
from mlaas.errors import MlaasError
from serve_apps.gateway.context import Context, CurrentPrincipal, consume_quota, endpoint_of
from serve_apps.knowledge import knowledge_client
from serve_apps.providers.client import providers_client

router = APIRouter(tags=["knowledge"])
MAX_K = 50
QUOTA = "knowledge_requests"


class DocumentBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    content: str = Field(description="Plain text, Markdown, or JSON records (object, array, "
                         "or JSON lines)")
    content_type: str = Field(default="text/plain",
                              examples=["text/plain", "text/markdown", "application/json"])
    title: str = Field(default="", max_length=300)
    source: str = Field(default="", max_length=1000, description="Where it came from (a path)")
    contributor: str | None = Field(default=None, description="Who is credited (default: the "
                                    "calling key's id)")
    domains: list[str] = Field(default_factory=list, description="Domain tags, e.g. finance")


class IngestBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    documents: list[DocumentBody]
    chunk_size: int = Field(default=160, description="Words per chunk (16-512)")
    chunk_overlap: int = Field(default=32, description="Words shared by neighbouring chunks")


class QueryBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(max_length=4000, description="Blank is refused by the pool")
    k: int = Field(default=5, ge=1, le=MAX_K)
    domains: list[str] | None = None
    mode: Literal["hybrid", "dense", "lexical"] = Field(
        default="hybrid", description="Signals: BM25 and MiniLM cosine fused, or one alone")
    expand: bool | None = Field(default=None, description="Also expand the hits through the "
                                "concept graph (default: off)")
    answer: bool = Field(default=False, description="Also generate an answer citing the "
                         "results, through the provider router")
    answer_model: str = Field(default="default", max_length=200,
                              description="Route alias or provider/model for the answer")


async def _check_room(body: IngestBody, principal: Any, ctx: Any) -> int:
    """Refuse (429) documents that would take the tenant past its tier's number; content
    already in the pool (``unchanged``) takes no room.

    Returns:
        How many distinct new contents the request holds.
    """
    kept = await knowledge_client.call("documents", principal.tenant_id)
    # The pool's identity of a document's content (knowledge.chunking.content_hash).
    known = {doc["content_hash"] for doc in kept}
    new = {hashlib.sha256(d.content.encode("utf-8")).hexdigest() for d in body.documents} - known
    if new:
        work_limits.check_count(ctx.tiers.work_limits(principal.tier), "max_knowledge_documents",
                                current=len(kept), adding=len(new), tier=principal.tier)
    return len(new)


@router.post("/v1/knowledge/documents")
async def ingest(
    body: IngestBody, request: Request, principal: CurrentPrincipal, ctx: Context
) -> dict[str, Any]:
    """Chunk, embed and index documents; content already in the pool is ``unchanged``."""
    new = await _check_room(body, principal, ctx)
    if new:  # charged whole once there is room, so a refused ingest costs nothing
        await consume_quota(ctx, principal, QUOTA, new, endpoint_of(request))
    docs = [{**d.model_dump(), "contributor": d.contributor or principal.key_id}
            for d in body.documents]
    results = await knowledge_client.call("ingest", principal.tenant_id, docs,
                                          body.chunk_size, body.chunk_overlap)
    return {"documents": results,
            "created": sum(1 for r in results if r["status"] == "created"),
            "unchanged": sum(1 for r in results if r["status"] == "unchanged")}


@router.get("/v1/knowledge/documents")
async def list_documents(principal: CurrentPrincipal) -> dict[str, Any]:
    """The caller's documents."""
    docs = await knowledge_client.call("documents", principal.tenant_id)
    return {"documents": docs, "total": len(docs)}


@router.delete("/v1/knowledge/documents/{document_id}")
async def delete_document(document_id: str, principal: CurrentPrincipal) -> dict[str, Any]:
    """Remove a document, its vectors and its graph edges."""
    removed = await knowledge_client.call("delete", principal.tenant_id, document_id)
    return {"deleted": True, "document_id": document_id, "chunks_removed": removed}


@router.post("/v1/knowledge/query")
async def query(body: QueryBody, principal: CurrentPrincipal) -> dict[str, Any]:
    """The ``k`` best chunks, each with its document, score and why it was included; with
    ``answer``, a generated answer whose ``[n]`` citations point at those results. Counted
    on admission (the ``metered`` map of configs/tiers.yaml)."""
    result: dict[str, Any] = await knowledge_client.call(
        "query", principal.tenant_id, body.query, body.k, body.domains, body.expand, body.mode)
    if body.answer and result.get("results"):
        result.update(await _answer(body, principal, result))
    return result


async def _answer(body: QueryBody, principal: Any, result: dict[str, Any]) -> dict[str, Any]:
    """The answer and its citations, or the provider router's refusal (results stand)."""
    messages = await knowledge_client.call("answer_messages", body.query, result["results"])
    request = {"model": body.answer_model, "messages": messages, "temperature": 0}
    tenant = {"tenant_id": principal.tenant_id, "tier": principal.tier,
              "endpoint": "/v1/knowledge/query"}
    try:
        outcome = await providers_client.call("chat_completion", request, tenant)
    except MlaasError as error:
        return {"answer": None, "answer_error": {"code": error.code, "message": error.message}}
    text = outcome["body"]["choices"][0]["message"]["content"] or ""
    citations = await knowledge_client.call("cite_answer", principal.tenant_id,
                                            result["query_id"], text, result["results"])
    return {"answer": {"text": text, "model": outcome["body"].get("model"),
                       "citations": citations}}


@router.get("/v1/knowledge/contributors")
async def contributors(principal: CurrentPrincipal) -> dict[str, Any]:
    """Knowledge credits per contributor of the caller's tenant."""
    rows = await knowledge_client.call("contributors", principal.tenant_id)
    return {"contributors": rows}


@router.get("/v1/knowledge/stats")
async def stats(principal: CurrentPrincipal) -> dict[str, Any]:
    """Documents, chunks, index type (and whether it is being rebuilt), graph size."""
    return await knowledge_client.call("stats", principal.tenant_id)  # type: ignore[no-any-return]


@router.get("/v1/knowledge/graph")
async def graph(
    principal: CurrentPrincipal,
    concept: str | None = Query(default=None, max_length=200),
    depth: int = Query(default=1, ge=0, le=4),
    format: Literal["json", "graphml", "svg"] = "json",
) -> Any:
    """The neighbourhood of a concept (default: the most connected one)."""
    result = await knowledge_client.call("graph", principal.tenant_id, concept, depth, format)
    if format == "graphml":
        return Response(result, media_type="application/graphml+xml")
    if format == "svg":
        return Response(result, media_type="image/svg+xml")
    return {"concept": concept, "depth": depth, **result}


_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>Knowledge graph</title>
<style>body{font-family:sans-serif;margin:1.5em}input{margin-right:.5em}#graph{margin-top:1em}
.legend span{margin-right:1em}</style></head><body>
<h1>Knowledge graph</h1>
<form id="f"><input id="key" type="password" placeholder="API key" size="40">
<input id="concept" placeholder="concept (empty: the most connected)" size="30">
<input id="depth" type="number" min="0" max="4" value="1" style="width:3em">
<button>Draw</button></form>
<p class="legend"><span style="color:#2b7bb9">&#9679; concept</span>
<span style="color:#e08a1e">&#9679; document</span><span style="color:#3a9d5d">&#9679; domain
</span><span style="color:#b5485d">&#9679; expert</span></p>
<div id="graph"></div><pre id="err"></pre>
<script>
const k = document.getElementById('key'); k.value = sessionStorage.getItem('mlaas_key') || '';
document.getElementById('f').onsubmit = async (e) => {
  e.preventDefault(); sessionStorage.setItem('mlaas_key', k.value);
  const q = new URLSearchParams({format: 'svg', depth: document.getElementById('depth').value});
  const c = document.getElementById('concept').value; if (c) q.set('concept', c);
  const auth = {Authorization: 'Bearer ' + k.value};
  const r = await fetch('/v1/knowledge/graph?' + q, {headers: auth});
  const text = await r.text();
  document.getElementById('err').textContent = r.ok ? '' : text;
  document.getElementById('graph').innerHTML = r.ok ? text : '';
};
</script></body></html>"""


@router.get("/knowledge/graph", response_class=HTMLResponse, include_in_schema=False)
async def graph_page() -> HTMLResponse:
    """A page that asks for a key and draws the graph (SVG rendered by the server)."""
    return HTMLResponse(_PAGE)
