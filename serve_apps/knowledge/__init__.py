"""The ``knowledge`` Serve application (no HTTP route): one ``KnowledgePool`` deployment that
holds every tenant's FAISS index and concept graph, with MiniLM encoder actors, and the
gateway's client for it. This top level stays light (no torch, no faiss) for the gateway."""

from serve_apps.knowledge.client import KnowledgeClient, knowledge_client


def app_builder(args: dict) -> object:  # type: ignore[type-arg]
    """Serve application builder for ``import_path: serve_apps.knowledge:app_builder``."""
    from serve_apps.knowledge.deployment import app_builder as build

    return build(args)


__all__ = ["KnowledgeClient", "app_builder", "knowledge_client"]
