"""The concept graph: documents, concepts, domains and expert models in one NetworkX graph.

Edges: ``mentions`` (document - concept, weight = summed keyphrase scores, with the chunk ids),
``related_to`` (concept - concept: co-occurrence in a chunk weighted by the cosine of the two
phrases' embeddings, kept per document so deletes subtract exactly), ``tagged`` (document -
domain) and ``expert_in`` (expert - domain). Persisted as node-link JSON; exported as
GraphML or node-link JSON.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import networkx as nx

ChunkConcepts = tuple[int, list[tuple[str, float]], list[tuple[int, int, float]]]


def concept_node(phrase: str) -> str:
    return f"concept:{phrase}"


class ConceptGraph:
    """A tenant's graph; every method keeps it consistent with the stored chunks."""

    def __init__(self, graph: nx.Graph | None = None) -> None:
        self.g: nx.Graph = graph if graph is not None else nx.Graph()

    def add_document(self, doc_id: str, *, title: str, contributor: str, domains: list[str],
                     chunks: Iterable[ChunkConcepts]) -> None:
        """Add a document's mentions, its concepts' relations and its domain tags."""
        doc = f"doc:{doc_id}"
        self.g.add_node(doc, kind="document", label=title, contributor=contributor)
        for domain in domains:
            self.g.add_node(f"domain:{domain}", kind="domain", label=domain)
            self.g.add_edge(doc, f"domain:{domain}", kind="tagged", weight=1.0)
        for chunk_id, phrases, pairs in chunks:
            for phrase, score in phrases:
                node = concept_node(phrase)
                self.g.add_node(node, kind="concept", label=phrase)
                edge = self.g.get_edge_data(doc, node)
                if edge is None:
                    self.g.add_edge(doc, node, kind="mentions", weight=0.0, chunks=[])
                    edge = self.g.edges[doc, node]
                edge["weight"] = round(edge["weight"] + max(score, 0.0), 4)
                edge["chunks"].append(chunk_id)
            for i, j, cosine in pairs:
                self._relate(phrases[i][0], phrases[j][0], doc_id, max(cosine, 0.0))

    def _relate(self, a: str, b: str, doc_id: str, amount: float) -> None:
        u, v = concept_node(a), concept_node(b)
        edge = self.g.get_edge_data(u, v)
        if edge is None:
            self.g.add_edge(u, v, kind="related_to", weight=0.0, by_doc={})
            edge = self.g.edges[u, v]
        edge["by_doc"][doc_id] = round(edge["by_doc"].get(doc_id, 0.0) + amount, 4)
        edge["weight"] = round(sum(edge["by_doc"].values()), 4)

    def remove_document(self, doc_id: str) -> None:
        """Remove a document, its mentions, its share of relations and orphaned concepts."""
        doc = f"doc:{doc_id}"
        touched = {n for n in self.g.neighbors(doc)} if doc in self.g else set()
        for u, v, data in list(self.g.edges(data=True)):
            if data.get("kind") == "related_to" and doc_id in data["by_doc"]:
                data["by_doc"].pop(doc_id)
                data["weight"] = round(sum(data["by_doc"].values()), 4)
                if not data["by_doc"]:
                    self.g.remove_edge(u, v)
                touched |= {u, v}
        if doc in self.g:
            self.g.remove_node(doc)
        for node in touched:
            if node in self.g and self.g.degree(node) == 0 and not node.startswith("expert:"):
                self.g.remove_node(node)

    def set_expert(self, name: str, domains: list[str]) -> None:
        node = f"expert:{name}"
        if node in self.g:
            self.g.remove_node(node)
        self.g.add_node(node, kind="expert", label=name)
        for domain in domains:
            self.g.add_node(f"domain:{domain}", kind="domain", label=domain)
            self.g.add_edge(node, f"domain:{domain}", kind="expert_in", weight=1.0)

    def chunks_mentioning(self, concept: str) -> list[tuple[int, str]]:
        """(chunk id, document node) of every chunk that mentions ``concept``."""
        node = concept_node(concept)
        if node not in self.g:
            return []
        return [(c, n) for n in self.g.neighbors(node)
                if self.g.edges[node, n].get("kind") == "mentions"
                for c in self.g.edges[node, n]["chunks"]]

    def personalized_pagerank(self, seeds: dict[str, float],
                              alpha: float = 0.85) -> dict[str, float]:
        """PageRank restarting at the seed concepts (weighted), over weighted edges."""
        present = {concept_node(c): w for c, w in seeds.items()
                   if concept_node(c) in self.g and w > 0}
        if not present:
            return {}
        ranks = nx.pagerank(self.g, alpha=alpha, personalization=present, weight="weight")
        return {node.removeprefix("concept:"): score for node, score in ranks.items()
                if node.startswith("concept:")}

    def neighbourhood(self, center: str, depth: int, max_nodes: int = 150) -> nx.Graph:
        """The subgraph within ``depth`` hops of a node, strongest edges first when too big."""
        if center not in self.g:
            return nx.Graph()
        nodes = {center}
        frontier = [center]
        for _ in range(depth):
            step: list[str] = []
            for node in frontier:
                ranked = sorted(self.g[node].items(), key=lambda kv: -kv[1].get("weight", 0))
                step.extend(n for n, _ in ranked if n not in nodes)
            frontier = list(dict.fromkeys(step))[: max(0, max_nodes - len(nodes))]
            nodes.update(frontier)
        return self.g.subgraph(nodes).copy()

    def document_count(self) -> int:
        return sum(1 for _, d in self.g.nodes(data=True) if d.get("kind") == "document")

    def top_concepts(self, limit: int = 1) -> list[str]:
        ranked = sorted((n for n, d in self.g.nodes(data=True) if d.get("kind") == "concept"),
                        key=lambda n: -self.g.degree(n, weight="weight"))
        return ranked[:limit]

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(node_link(self.g)))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> ConceptGraph:
        data = json.loads(path.read_text())
        return cls(nx.node_link_graph(data, edges="edges"))


def node_link(graph: nx.Graph) -> dict[str, Any]:
    """Node-link JSON (``nodes`` and ``edges``)."""
    return nx.node_link_data(graph, edges="edges")  # type: ignore[no-any-return]


def graphml(graph: nx.Graph) -> str:
    """GraphML text; list and dict attributes are flattened to strings (GraphML has scalars)."""
    flat = nx.Graph()
    for node, data in graph.nodes(data=True):
        flat.add_node(node, **{k: v for k, v in data.items() if isinstance(v, str | int | float)})
    for u, v, data in graph.edges(data=True):
        attrs = {k: (val if isinstance(val, str | int | float) else json.dumps(val))
                 for k, val in data.items()}
        flat.add_edge(u, v, **attrs)
    buffer = io.BytesIO()
    nx.write_graphml(flat, buffer)
    return buffer.getvalue().decode("utf-8")
