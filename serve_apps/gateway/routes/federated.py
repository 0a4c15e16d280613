"""``/v1/federated``: pools, nodes joining them, round polling, protocol messages, the global
model, contributors' credits, and the owner's approval of nodes with the roster it builds.

Each pool's coordinator is a named detached Ray actor created on demand here; a pool's
nodes use keys of the tenant that owns it: the owner's (tenant scope), or a data owner's
participant key (scope ``federated``), whose node waits, ``pending``, for the owner's
approval unless the key was pre-authorised. Polls and leaves are signed by the node's
identity key and checked here before the coordinator hears of them. Protocol refusals
(bad signature, another round or stage, replay, duplicate, wrong length, not selected) come
back in the documented error shape with ``details.reason``. A masked input may come as JSON
to ``/messages`` or as a bit-packed binary body to ``/messages/binary``, its signed message
in a header.

A pool created with ``aggregation: "clear"`` opts out of secure aggregation: its nodes post
their updates unmasked (``clear_input`` to ``/messages/binary``), every description of the
pool says so (``aggregation``, ``server_sees_individual_updates``, ``privacy_notice``), and
only such a pool may score contributions by leave-one-out. A secure pool refuses an update
in the clear (403, ``details.reason: secure_pool``).

A pool may have an owner key (``owner_key`` in the spec at creation, or ``PUT
…/owner-key`` once): the owner's Ed25519 public key, which must sign every roster entry.
Approvals then carry ``owner_signature`` and a bad or missing one is 403
(``details.reason: bad_owner_signature``); the key itself never changes (a second one is 409).
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from fastapi import APIRouter, Body, Header, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from mlaas import errors, work_limits
from mlaas.auth import Principal
from mlaas.placement import platform_actor_options
from mlaas.storage import get_storage
from serve_apps.gateway.context import Context, CurrentPrincipal

router = APIRouter(tags=["federated"])
_ERRORS = {cls.__name__: cls for cls in (errors.ValidationError, errors.ForbiddenError,
                                          errors.NotFoundError, errors.ConflictError)}


class JoinRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    identity_key: str = Field(min_length=40, max_length=60,
                              description="the node's Ed25519 public key, base64")
    label: str = Field(default="", max_length=100)


class LeaveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Literal["budget", "done", "other"] = "other"


class ApproveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    owner_signature: str | None = Field(
        default=None, max_length=100,
        description="in a pool with an owner key: its signature (base64) of the new roster "
        "entry's hash, after b'mlaas-roster/v1|'")


class OwnerKeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    owner_key: str = Field(min_length=40, max_length=64,
                           description="the owner's Ed25519 public key, base64")
    signatures: dict[int, str] = Field(
        default_factory=dict, description="roster seq -> the owner's signature of that "
        "entry's hash: every entry so far must be signed")


class MessageRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    node_id: str = Field(min_length=1, max_length=40)
    message: dict[str, Any]


def _federated() -> Any:
    import federated  # imported on first use: the gateway starts without torch or opacus

    return federated


async def _own_pool(pool_id: str, principal: Principal, ctx: Any) -> dict[str, Any]:
    return await run_in_threadpool(_federated().get_pool, ctx.database_url, pool_id,
                                   principal.tenant_id)


def _raise(error: dict[str, Any]) -> None:
    """Re-raise a refusal that crossed the actor boundary as data, in the documented shape."""
    exc = errors.MlaasError(error["message"], details=error.get("details") or {})
    exc.status_code, exc.code = int(error["status"]), str(error["code"])
    raise exc


async def _call(pool_id: str, ctx: Any, method: str, *args: Any) -> Any:
    """Call the pool's coordinator, re-creating it once if it died (it recovers from the
    database)."""
    import ray.exceptions

    for attempt in range(3):
        handle = _federated().coordinator_for(pool_id, ctx.database_url, None,
                                              placement=platform_actor_options(ctx.settings))
        try:
            answer = await handle.call.remote(method, *args)
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError):
            await asyncio.sleep(0.5 * (attempt + 1))
            continue
        if "error" in answer:
            _raise(answer["error"])
        return answer["result"]
    raise errors.ServiceUnavailableError(f"The coordinator of pool {pool_id} is restarting; "
                                         "retry shortly", headers={"Retry-After": "2"})


@router.post("/v1/federated/pools", status_code=201)
async def create_pool(
    principal: CurrentPrincipal, ctx: Context,
    spec: dict[str, Any] = Body(..., description="a pool spec"),  # noqa: B008
) -> dict[str, Any]:
    """Check the spec (insecure parameters are refused with the fix) and the tier's number of
    open pools, register the first global model, and start the pool's coordinator."""
    from serve_apps.gateway.training import tenant_data_dir

    federated = _federated()
    limits = ctx.tiers.work_limits(principal.tier)

    def admit(open_pools: int) -> None:
        work_limits.check_count(limits, "max_open_federated_pools", current=open_pools,
                                tier=principal.tier)

    # Refused early when the count is plainly over; the write counts again, one at a time
    pools = await run_in_threadpool(federated.list_pools, ctx.database_url, principal.tenant_id)
    admit(sum(p["status"] == "open" for p in pools))
    pool = await run_in_threadpool(federated.create_pool, ctx.database_url,
                                   get_storage(ctx.settings), principal.tenant_id, spec,
                                   tenant_data_dir(ctx.settings, principal.tenant_id), admit)
    # Start the coordinator now, without waiting for it: it reads the pool from the database.
    federated.coordinator_for(pool["id"], ctx.database_url, None,  # storage of its node
                              placement=platform_actor_options(ctx.settings))
    return {**pool, "round": None, "stage": None,
            "join_url": f"/v1/federated/pools/{pool['id']}"}


@router.get("/v1/federated/pools")
async def list_pools(principal: CurrentPrincipal, ctx: Context) -> dict[str, Any]:
    pools = await run_in_threadpool(_federated().list_pools, ctx.database_url,
                                    principal.tenant_id)
    return {"pools": pools, "total": len(pools)}


@router.get("/v1/federated/pools/{pool_id}")
async def get_pool(pool_id: str, principal: CurrentPrincipal, ctx: Context) -> dict[str, Any]:
    """The pool (with whether it opts out of secure aggregation), its current round and
    stage, and every round so far."""
    await _own_pool(pool_id, principal, ctx)
    status = await _call(pool_id, ctx, "status")
    status["rounds"] = await run_in_threadpool(_federated().rounds_of, ctx.database_url,
                                               pool_id)
    return status


@router.post("/v1/federated/pools/{pool_id}/nodes", status_code=201)
async def join_pool(pool_id: str, body: JoinRequest, principal: CurrentPrincipal,
                    ctx: Context) -> dict[str, Any]:
    """Register a node's identity key; joining again with the same key gives the same node.
    ``approved`` says whether it may be selected, or waits for the owner's approval."""
    await _own_pool(pool_id, principal, ctx)
    joined = await _call(pool_id, ctx, "join", body.identity_key, principal.key_id, body.label)
    node = await run_in_threadpool(_federated().get_node, ctx.database_url, pool_id,
                                   joined["node_id"])
    return {**joined, "approved": bool(node and node["approved"])}


async def _signed_by_node(request: Request, ctx: Any, pool_id: str, node_id: str,
                          action: str, params: dict[str, Any]) -> None:
    """Refuse (403) a poll or leave not signed by the node's own identity key, so no key
    holder can mark another node ready or make it leave."""
    federated = _federated()
    identity_key = await run_in_threadpool(federated.node_identity, ctx.database_url, pool_id,
                                           node_id)
    if identity_key is None:
        raise errors.NotFoundError(f"Node {node_id!r} has not joined pool {pool_id}",
                                   details={"node_id": node_id})
    federated.check_signed(identity_key, pool_id, node_id, action, params,
                           request.headers.get(federated.TIMESTAMP_HEADER),
                           request.headers.get(federated.SIGNATURE_HEADER))


async def _sent_by_node(ctx: Any, pool_id: str, node_id: str, message: dict[str, Any]) -> None:
    """Refuse (403) a protocol message not signed by ``node_id`` before the coordinator sees
    it: the coordinator takes any message as a sign of life of its node."""
    federated = _federated()
    identity_key = await run_in_threadpool(federated.node_identity, ctx.database_url, pool_id,
                                           node_id)
    federated.check_message_sender(identity_key, node_id, message)


@router.get("/v1/federated/pools/{pool_id}/nodes")
async def list_nodes(pool_id: str, principal: CurrentPrincipal, ctx: Context) -> dict[str, Any]:
    """Every node of the pool with its status and whether the owner approved it."""
    await _own_pool(pool_id, principal, ctx)
    nodes = await run_in_threadpool(_federated().list_nodes, ctx.database_url, pool_id)
    return {"pool_id": pool_id, "nodes": nodes, "total": len(nodes)}


@router.post("/v1/federated/pools/{pool_id}/nodes/{node_id}/approve")
async def approve_node(pool_id: str, node_id: str, principal: CurrentPrincipal,
                       ctx: Context, body: ApproveRequest | None = None) -> dict[str, Any]:
    """The owner approves a pending node: it goes on the roster and may be selected from the
    next round on (participant keys get 403 here). In a pool with an owner key the approval
    carries the owner's signature of the new entry, checked before it is appended."""
    await _own_pool(pool_id, principal, ctx)
    federated = _federated()
    signature = body.owner_signature if body is not None else None
    node = await run_in_threadpool(federated.approve_node, ctx.database_url, pool_id, node_id,
                                   signature)
    roster = await run_in_threadpool(federated.roster_of, ctx.database_url, pool_id)
    return {**node, "roster_head": roster[-1]["hash"], "roster_length": len(roster)}


@router.put("/v1/federated/pools/{pool_id}/owner-key")
async def set_owner_key(pool_id: str, body: OwnerKeyRequest, principal: CurrentPrincipal,
                        ctx: Context) -> dict[str, Any]:
    """Register the pool's owner key, once (409 after), with its signature of every roster
    entry so far; from then on only entries it signs join the roster."""
    await _own_pool(pool_id, principal, ctx)
    return await run_in_threadpool(_federated().set_owner_key, ctx.database_url, pool_id,
                                   body.owner_key, body.signatures)


@router.get("/v1/federated/pools/{pool_id}/roster")
async def roster(pool_id: str, principal: CurrentPrincipal, ctx: Context) -> dict[str, Any]:
    """The approved nodes' identity keys as a hash chain; ``head`` is its fingerprint. With
    the pool's ``owner_key`` (and its fingerprint) when it has one: each entry then carries
    the owner's signature."""
    pool = await _own_pool(pool_id, principal, ctx)
    federated = _federated()
    entries = await run_in_threadpool(federated.roster_of, ctx.database_url, pool_id)
    head = entries[-1]["hash"] if entries else federated.ROSTER_GENESIS
    owner_key = pool.get("owner_key")
    return {"pool_id": pool_id, "entries": entries, "length": len(entries), "head": head,
            "fingerprint": federated.roster_fingerprint(head), "owner_key": owner_key,
            "owner_fingerprint": (federated.roster_owner_fingerprint(owner_key)
                                  if owner_key else None)}


@router.post("/v1/federated/pools/{pool_id}/nodes/{node_id}/leave")
async def leave_pool(pool_id: str, node_id: str, body: LeaveRequest, request: Request,
                     principal: CurrentPrincipal, ctx: Context) -> dict[str, Any]:
    """The node leaves (signed by its identity key, ``X-Node-Timestamp``/``-Signature``)."""
    await _own_pool(pool_id, principal, ctx)
    await _signed_by_node(request, ctx, pool_id, node_id, "leave", {"reason": body.reason})
    return await _call(pool_id, ctx, "leave", node_id, body.reason)


@router.get("/v1/federated/pools/{pool_id}/round")
async def poll_round(
    pool_id: str, request: Request, principal: CurrentPrincipal, ctx: Context,
    node_id: str = Query(..., max_length=40),
    known: str | None = Query(None, max_length=200, description="the marker last seen"),
    wait: float = Query(0, ge=0, le=20, description="seconds to wait for a change"),
) -> dict[str, Any]:
    """The current round and stage, and what this node needs for it (long-polls); signed by
    the node's identity key (``X-Node-Timestamp``/``-Signature``), as a poll marks it ready."""
    await _own_pool(pool_id, principal, ctx)
    federated = _federated()
    await _signed_by_node(request, ctx, pool_id, node_id, "poll",
                          federated.poll_params(known, wait))
    return await _call(pool_id, ctx, "poll", node_id, known, wait)


@router.post("/v1/federated/pools/{pool_id}/messages", status_code=202)
async def post_message(pool_id: str, body: MessageRequest, principal: CurrentPrincipal,
                       ctx: Context) -> dict[str, Any]:
    """One signed protocol message for the current stage."""
    await _own_pool(pool_id, principal, ctx)
    await _sent_by_node(ctx, pool_id, body.node_id, body.message)
    return await _call(pool_id, ctx, "submit", body.node_id, body.message)


@router.post("/v1/federated/pools/{pool_id}/messages/binary", status_code=202)
async def post_binary_message(
    pool_id: str, request: Request, principal: CurrentPrincipal, ctx: Context,
    node_id: str = Query(..., min_length=1, max_length=40),
    signed_message: str = Header(..., alias="X-Secagg-Message", max_length=16384,
                                 description="base64 of the signed message JSON; its "
                                 "payload carries the body's vector_sha256"),
) -> dict[str, Any]:
    """A masked input whose vector is the request body (``application/octet-stream``,
    bit-packed at the modulus's width); a body that is not the one signed is refused."""
    federated = _federated()
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != federated.BinaryMessage.MEDIA_TYPE:
        raise errors.ValidationError(
            f"Content-Type must be {federated.BinaryMessage.MEDIA_TYPE} (got "
            f"{media_type or 'none'}); send JSON messages to /messages",
            details={"field": "content-type"})
    try:
        message = federated.BinaryMessage.message_of_header(signed_message)
    except ValueError as exc:
        raise errors.ValidationError(str(exc), details={"field": "X-Secagg-Message"}) from exc
    await _own_pool(pool_id, principal, ctx)
    await _sent_by_node(ctx, pool_id, node_id, message)
    return await _call(pool_id, ctx, "submit", node_id, message, await request.body())


@router.get("/v1/federated/pools/{pool_id}/model")
async def global_model(pool_id: str, principal: CurrentPrincipal, ctx: Context,
                       version: int | None = Query(None, ge=1, le=2**31 - 1)) -> Response:
    """The global model's weights (safetensors); ``X-Model-Version`` names the version."""
    pool = await _own_pool(pool_id, principal, ctx)
    number = version or pool["global_version"]
    data = await run_in_threadpool(_federated().read_version_weights, ctx.database_url,
                                   principal.tenant_id, pool["name"], number)
    return Response(data, media_type="application/octet-stream",
                    headers={"X-Model-Version": str(number)})


@router.get("/v1/federated/pools/{pool_id}/contributors")
async def contributors(pool_id: str, principal: CurrentPrincipal,
                       ctx: Context) -> dict[str, Any]:
    """Credits per node in the shared rewards ledger, rounds in time, dropouts, samples; in a
    pool that scores contributions, each node's summed leave-one-out value and the rounds it
    made the model worse (paid 0)."""
    pool = await _own_pool(pool_id, principal, ctx)
    rows = await run_in_threadpool(_federated().contributors, ctx.database_url, principal.tenant_id,
                                   pool_id)
    scoring = pool["spec"].get("contribution_scoring")
    return {"pool_id": pool_id, "aggregation": pool["aggregation"],
            "scoring": scoring["method"] if scoring else "participation",
            "contributors": rows}
