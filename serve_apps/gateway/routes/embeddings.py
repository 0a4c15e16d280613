"""``POST /v1/embeddings``: OpenAI-compatible sentence embeddings from the local MiniLM
deployment, so that ``OpenAI(base_url=".../v1").embeddings.create(...)`` works unchanged
(including the SDK's default ``encoding_format="base64"``). Each text counts one
``embedding_inputs`` against the tenant's monthly quota, all charged once the body is valid."""

from __future__ import annotations

import base64
from typing import Any, Literal

import numpy as np
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from mlaas.errors import NotFoundError, PayloadTooLargeError, ValidationError
from serve_apps.embeddings import DIMENSIONS, MODEL_ID
from serve_apps.gateway.context import Context, CurrentPrincipal, consume_quota, endpoint_of
from serve_apps.inference import inference_client

router = APIRouter(tags=["embeddings"])
MODEL_ALIASES = {MODEL_ID, f"sentence-transformers/{MODEL_ID}", "local/embeddings"}
MAX_INPUTS = 256
MAX_CHARS = 20_000
QUOTA = "embedding_inputs"


class EmbeddingsRequest(BaseModel):
    input: str | list[str] | list[int] | list[list[int]]
    model: str = MODEL_ID
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None


def _texts(body: EmbeddingsRequest) -> list[str]:
    if body.model not in MODEL_ALIASES:
        raise NotFoundError(
            f"No embeddings model {body.model!r}; available: {sorted(MODEL_ALIASES)}",
            details={"field": "model", "received": body.model, "expected": MODEL_ID},
        )
    if body.dimensions not in (None, DIMENSIONS):
        raise ValidationError(
            f"{MODEL_ID} has {DIMENSIONS} dimensions (got dimensions={body.dimensions})",
            details={"field": "dimensions", "expected": DIMENSIONS},
        )
    given = [body.input] if isinstance(body.input, str) else body.input
    texts = [t for t in given if isinstance(t, str)]
    if not texts or len(texts) != len(given):
        raise ValidationError(
            "input must be a non-empty string or list of strings (token ids are not accepted)",
            details={"field": "input", "expected": "string or list of strings"},
        )
    if len(texts) > MAX_INPUTS:
        raise PayloadTooLargeError(
            f"At most {MAX_INPUTS} inputs per request (got {len(texts)})",
            details={"field": "input", "max_inputs": MAX_INPUTS},
        )
    too_long = [i for i, t in enumerate(texts) if len(t) > MAX_CHARS or not t.strip()]
    if too_long:
        raise ValidationError(
            f"Each input must be 1-{MAX_CHARS} non-blank characters (bad: {too_long[:10]})",
            details={"field": "input", "indices": too_long[:10]},
        )
    return texts


def _encoded(vector: np.ndarray, encoding: str) -> Any:
    if encoding == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return vector.tolist()


@router.post("/v1/embeddings")
async def embeddings(
    body: EmbeddingsRequest, request: Request, principal: CurrentPrincipal, ctx: Context
) -> dict[str, Any]:
    """Embeddings of each input, in the OpenAI list shape."""
    texts = _texts(body)
    # All or nothing, after validation: a refused or invalid request costs nothing.
    await consume_quota(ctx, principal, QUOTA, len(texts), endpoint_of(request))
    result = await inference_client.embed(texts)
    vectors = np.asarray(result["vectors"], dtype=np.float32)
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": _encoded(v, body.encoding_format)}
            for i, v in enumerate(vectors)
        ],
        "model": MODEL_ID,
        "usage": {
            "prompt_tokens": result["prompt_tokens"],
            "total_tokens": result["prompt_tokens"],
        },
    }
