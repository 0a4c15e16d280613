"""Contribution scores: per node and completed round, credited to the shared rewards ledger.

Participation (every pool without ``contribution_scoring``): a node whose input arrived in
time earns 1 credit for taking part plus up to 1 for its data (samples / sample_cap, capped
at 1); a selected node that dropped out earns nothing and its dropout is counted.

Leave-one-out (pools that opted out of secure aggregation and score contributions): a round
with n survivors pays n credits, split in proportion to the positive leave-one-out values
``v_i`` (``_leave_one_out``): ``credit_i = n * max(v_i, 0) / sum_j max(v_j, 0)``. A node
whose update made the model worse (``v_i < 0``) earns 0, never a negative amount, and the
round is counted among its ``negative_contributions``; when no value is positive nobody is
paid for that round. Aborted rounds earn nothing.
"""

from __future__ import annotations

import logging
from typing import Any

from federated import _store
from mlaas import rewards

SOURCE = "federated"
log = logging.getLogger("mlaas.federated")


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


def contribution_credits(pool_id: str, number: int,
                         scores: dict[str, float]) -> list[rewards.Credit]:
    """The round's n credits split in proportion to the positive leave-one-out values."""
    positive = {node: max(value, 0.0) for node, value in scores.items()}
    total = sum(positive.values())
    for node, value in sorted(scores.items()):
        if value < 0:
            log.warning("pool %s round %s: node %s made the model worse (leave-one-out %s); "
                        "no credit", pool_id, number, node, value)
    if total <= 0:
        return []
    return [rewards.Credit(node, round(len(scores) * value / total, 6), "contribution",
                           f"{pool_id}/round-{number}")
            for node, value in sorted(positive.items()) if value > 0]


def contributors(url: str, tenant_id: str, pool_id: str) -> list[dict[str, Any]]:
    """Each node of the pool: credits in the ledger, rounds in time, dropouts, samples, and
    (pools that score contributions) its summed leave-one-out value and how many rounds it
    was negative."""
    nodes = _store.nodes_of(url, pool_id)
    stats: dict[str, dict[str, Any]] = {
        node_id: {"node_id": node_id, "label": info["label"], "status": info["status"],
                  "rounds_in_time": 0, "dropouts": 0, "samples": 0, "credits": 0.0,
                  "leave_one_out": None, "negative_contributions": 0}
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
        if row.get("score") is not None:
            entry["leave_one_out"] = round((entry["leave_one_out"] or 0.0) + row["score"], 6)
            entry["negative_contributions"] += row["score"] < 0
    for balance in rewards.balances(url, tenant_id, source=SOURCE):
        if balance.contributor in stats:
            stats[balance.contributor]["credits"] = balance.credits
    return sorted(stats.values(), key=lambda s: (-s["credits"], s["node_id"]))
