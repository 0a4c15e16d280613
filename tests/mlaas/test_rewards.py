"""The shared rewards ledger: credits once per (reason, reference), balances per tenant."""

from __future__ import annotations

import pytest

from mlaas import rewards
from mlaas.db import Tenant, current_revisions, session_scope
from mlaas.errors import ValidationError


@pytest.fixture()
def url(database_url: str) -> str:
    url = database_url
    with session_scope(url) as session:
        session.add_all([Tenant(id="t_a", name="a"), Tenant(id="t_b", name="b")])
    return url


def test_migrations_reach_every_head(url: str) -> None:
    revisions = current_revisions(url)
    assert revisions and all(r >= "0003" for r in revisions)


def test_a_retried_credit_is_counted_once(url: str) -> None:
    first = rewards.credit(url, "t_a", "federated", [rewards.Credit("node-1", 2.0, "round", "r1")])
    again = rewards.credit(url, "t_a", "federated", [rewards.Credit("node-1", 2.0, "round", "r1")])
    assert (first, again) == (1, 0)
    assert [b.credits for b in rewards.balances(url, "t_a")] == [2.0]


def test_balances_sum_sources_and_stay_inside_the_tenant(url: str) -> None:
    rewards.credit(url, "t_a", "federated", [rewards.Credit("alice", 1.0, "round", "r1")])
    rewards.credit(
        url,
        "t_a",
        "knowledge",
        [
            rewards.Credit("alice", 0.25, "cited", "q1"),
            rewards.Credit("bob", 3.0, "returned", "q1"),
        ],
    )
    rewards.credit(url, "t_b", "knowledge", [rewards.Credit("carol", 9.0, "returned", "q9")])

    balances = rewards.balances(url, "t_a")
    assert [(b.contributor, b.credits) for b in balances] == [("bob", 3.0), ("alice", 1.25)]
    assert balances[1].by_source == {"federated": 1.0, "knowledge": 0.25}
    assert [b.contributor for b in rewards.balances(url, "t_a", source="federated")] == ["alice"]
    assert [b.contributor for b in rewards.balances(url, "t_b")] == ["carol"]


def test_bad_credits_are_refused_and_nothing_is_written(url: str) -> None:
    with pytest.raises(ValidationError):
        rewards.credit(url, "t_a", "elsewhere", [rewards.Credit("x", 1.0, "r", "1")])
    with pytest.raises(ValidationError):
        rewards.credit(
            url,
            "t_a",
            "knowledge",
            [rewards.Credit("x", 1.0, "r", "1"), rewards.Credit("y", -1.0, "r", "1")],
        )
    assert rewards.balances(url, "t_a") == []
