"""``POST /v1/embeddings`` with the official ``openai`` SDK against the platform: MiniLM from
the installed package, 384-dimensional unit vectors, OpenAI's list shape and errors."""

from __future__ import annotations

import time

import httpx
import numpy as np
import openai
import pytest
from openai import OpenAI

from tests.conftest import Platform
from tests.serve_apps.inference.conftest import Tenant


@pytest.fixture(scope="module")
def sdk(platform: Platform, tenant: Tenant) -> OpenAI:
    client = OpenAI(base_url=platform.url + "/v1", api_key=tenant.key, max_retries=0)
    deadline = time.monotonic() + 120
    while True:  # the embedder replica may still be loading MiniLM
        try:
            client.embeddings.create(model="all-MiniLM-L6-v2", input="warm up")
            return client
        except openai.InternalServerError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_openai_sdk_gets_384_dimensional_unit_vectors(sdk: OpenAI) -> None:
    # Execute: the SDK asks for base64 by default and decodes it
    result = sdk.embeddings.create(
        model="all-MiniLM-L6-v2",
        input=["A cat sits on the mat.", "A kitten rests on a rug.", "Stock prices fell."],
    )
    # Assert
    vectors = np.asarray([item.embedding for item in result.data])
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-3)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
    assert result.usage.prompt_tokens > 0
    assert [item.index for item in result.data] == [0, 1, 2]


def test_float_and_base64_encodings_agree(platform: Platform, tenant: Tenant, sdk: OpenAI) -> None:
    as_base64 = sdk.embeddings.create(model="all-MiniLM-L6-v2", input="same text").data[0]
    with platform.client(tenant.key) as client:
        as_float = client.post(
            "/v1/embeddings",
            json={"model": "all-MiniLM-L6-v2", "input": "same text", "encoding_format": "float"},
        ).json()["data"][0]["embedding"]
    assert np.allclose(as_base64.embedding, as_float, atol=1e-6)


def test_vectors_match_the_model_called_directly(sdk: OpenAI) -> None:
    from serve_apps.embeddings.deployment import load_minilm

    direct = load_minilm().encode(["direct check"], normalize_embeddings=True)[0]
    served = sdk.embeddings.create(model="all-MiniLM-L6-v2", input="direct check").data[0]
    assert np.allclose(direct, served.embedding, atol=1e-4)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"model": "text-embedding-3-large", "input": "x"}, 404),
        ({"model": "all-MiniLM-L6-v2", "input": []}, 422),
        ({"model": "all-MiniLM-L6-v2", "input": "x", "dimensions": 10}, 422),
        ({"model": "all-MiniLM-L6-v2", "input": ["x"] * 257}, 413),
    ],
    ids=["unknown-model", "empty", "dimensions", "too-many"],
)
def test_bad_embedding_requests_are_refused(
    platform: Platform, tenant: Tenant, sdk: OpenAI, body: dict, status: int
) -> None:
    with platform.client(tenant.key) as client:
        response = client.post("/v1/embeddings", json=body)
    assert response.status_code == status, response.text
    assert "error" in response.json()


def test_embeddings_need_a_key(platform: Platform) -> None:
    response = httpx.post(platform.url + "/v1/embeddings", json={"input": "x"})
    assert response.status_code == 401
