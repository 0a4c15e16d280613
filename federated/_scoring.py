"""Contribution scores: per node and completed round, credited to the shared rewards ledger.

A node whose masked input arrived in time earns 1 credit for taking part plus up to 1 for
its data (samples / sample_cap, capped at 1); a selected node that dropped out earns
nothing and its dropout is counted. Aborted rounds earn nothing.
"""

from __future__ import annotations

from typing import Any

from federated import _store
from mlaas import rewards

SOURCE = "federated"


def round_credits(
    pool_id: str, number: int, survivors: list[str], claims: dict[str, dict[str, Any]],
    sample_cap: int,
) -> list[rewards.Credit]:
    credits = []
    for node_id in survivors:
        samples = _store._int_or_none(claims.get(node_id, {}).get("samples")) or 0
        data_part = min(max(samples, 0), sample_cap) / sample_cap
        credits.append(rewards.Credit(node_id, round(1.0 + data_part, 6), "round",
                                      f"{pool_id}/round-{number}"))
    return credits


def contributors(url: str, tenant_id: str, pool_id: str) -> list[dict[str, Any]]:
    """Each node of the pool: credits in the ledger, rounds in time, dropouts, samples."""
    nodes = _store.nodes_of(url, pool_id)
    stats: dict[str, dict[str, Any]] = {
        node_id: {"node_id": node_id, "label": info["label"], "status": info["status"],
                  "rounds_in_time": 0, "dropouts": 0, "samples": 0, "credits": 0.0}
        for node_id, info in nodes.items()}
    for row in _store.node_round_states(url, pool_id):
        entry = stats.get(row["node_id"])
        if entry is None or row["round_status"] != "completed":
            continue
        if row["state"] == "in_time":
            entry["rounds_in_time"] += 1
            entry["samples"] += row["samples"] or 0
        else:
            entry["dropouts"] += 1
    for balance in rewards.balances(url, tenant_id, source=SOURCE):
        if balance.contributor in stats:
            stats[balance.contributor]["credits"] = balance.credits
    return sorted(stats.values(), key=lambda s: (-s["credits"], s["node_id"]))
