"""The knowledge pool: documents -> structure-aware chunks -> MiniLM embeddings (on Ray actors)
-> FAISS index (sharded over actors when large), a BM25 lexical index and a NetworkX concept
graph -> hybrid retrieval (rank fusion) with citations; an expert-model registry with
routing; contributor credits in the shared ledger.

Public names are here; see ``pool.KnowledgePool`` for the whole flow.
"""

from knowledge.chunking import (
    Chunk,
    ChunkingConfig,
    chunk_document,
    chunk_text,
    content_type_of,
    plain_text,
)
from knowledge.documents import MAX_K, DocumentInput
from knowledge.encoder import DIMENSIONS, EncodedChunk, EncoderPool, PhraseEncoder
from knowledge.errors import KnowledgeUnavailableError
from knowledge.graph import ConceptGraph, graphml, node_link
from knowledge.index import IndexPolicy, VectorIndex, build_index
from knowledge.lexical import LexicalIndex
from knowledge.pool import IngestResult, KnowledgePool
from knowledge.render import render_svg
from knowledge.retrieval import QueryOptions
from knowledge.sharding import IndexShard, ShardedIndex, merge_top_k

__all__ = [
    "DIMENSIONS",
    "MAX_K",
    "Chunk",
    "ChunkingConfig",
    "ConceptGraph",
    "DocumentInput",
    "EncodedChunk",
    "EncoderPool",
    "IndexPolicy",
    "IndexShard",
    "IngestResult",
    "KnowledgePool",
    "KnowledgeUnavailableError",
    "LexicalIndex",
    "PhraseEncoder",
    "QueryOptions",
    "ShardedIndex",
    "VectorIndex",
    "build_index",
    "chunk_document",
    "chunk_text",
    "content_type_of",
    "graphml",
    "merge_top_k",
    "node_link",
    "plain_text",
    "render_svg",
]
