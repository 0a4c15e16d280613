"""The served knowledge app with its index spread over shard actors
(``MLAAS_KNOWLEDGE_INDEX_SHARDS``): the same answers as with one index, through the app's own
deployment class on the platform's Ray."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from tests.knowledge.corpus import documents

Service = Any


def served(home: Path) -> Service:
    """The ``KnowledgePool`` deployment's class, built as Serve builds it, on its own home."""
    from mlaas.db import Tenant, migrate, session_scope
    from serve_apps.knowledge.deployment import KnowledgeService

    url = f"sqlite:///{home}/mlaas.db"
    home.mkdir(parents=True, exist_ok=True)
    migrate(url)
    with session_scope(url) as session:
        session.add(Tenant(id="t_s", name="s"))
    deployment = cast(Any, KnowledgeService)
    return deployment.func_or_class({"settings": {"home": str(home)}, "encoder_actors": 1})


def stop(service: Service) -> None:
    import ray

    asyncio.run(service.reload())  # forget: the shard actors are stopped
    for actor in service.encoder.actors:
        ray.kill(actor)


@pytest.fixture()
def one_and_sharded(ray_driver: None, tmp_path: Path,
                    monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Service, Service]]:
    one = served(tmp_path / "one")
    monkeypatch.setenv("MLAAS_KNOWLEDGE_INDEX_SHARDS", "3")
    sharded = served(tmp_path / "sharded")
    try:
        yield one, sharded
    finally:
        stop(one)
        stop(sharded)


def test_served_app_with_index_shards_answers_like_one_index(
    one_and_sharded: tuple[Service, Service],
) -> None:
    # Prepare: the same documents in an unsharded and a 3-shard app
    one, sharded = one_and_sharded
    docs = [{**d.__dict__} for d in documents()]
    idle = [list(service.encoder.actors) for service in (one, sharded)]
    for service in (one, sharded):
        asyncio.run(service.ingest("t_s", docs, 160, 32))
    queries = [("Which drugs lower high blood pressure?", None), ("bond prices", ["finance"]),
               ("marathon training", None)]

    def answers(service: Service) -> list[list[tuple[int, str]]]:
        return [[(r["chunk_id"], r["document"]["title"]) for r in asyncio.run(
            service.query("t_s", text, 5, domains, True))["results"]]
            for text, domains in queries]

    # Execute
    expected, got = answers(one), answers(sharded)
    stats = asyncio.run(sharded.stats("t_s"))
    victim = next(d for d in asyncio.run(sharded.documents("t_s")) if d["title"] == "medicine-1")
    asyncio.run(sharded.delete("t_s", victim["id"]))
    after_delete = answers(sharded)
    asyncio.run(sharded.reload("t_s"))  # new shard actors, filled from the stored embeddings
    reloaded = answers(sharded)
    # Assert
    # MiniLM actors start with the first document, not with the app (an idle platform has none)
    assert idle == [[], []] and len(one.encoder.actors) == len(sharded.encoder.actors) == 1
    assert got == expected and got[0][0][1] == "medicine-1"
    assert {r[1] for r in got[1]} <= {"finance-0", "finance-1", "finance-2"}
    assert stats["index"] == "3 shards: IDMap2,Flat" and stats["chunks"] == 9
    assert "medicine-1" not in {title for hits in after_delete for _, title in hits}
    assert len(after_delete[0]) == 5
    assert reloaded == after_delete
    assert asyncio.run(sharded.stats("t_s"))["recovered"] == []
