"""Fixtures of the inference tests: a tenant of the shared platform with a tiny digits MLP
trained in this process and registered in the platform's database and artifact store."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pytest

from mlaas.registry import ModelVersionInfo
from mlaas.storage import Storage, tenant_data_prefix
from serve_apps.inference.demo import digits, register_torch_version, train_digits_mlp
from tests.conftest import Platform


@dataclass
class Tenant:
    id: str
    key: str


@dataclass
class Store:
    """Where the platform keeps models: its database and its storage (local or S3)."""

    database_url: str
    storage: Storage

    def put_dataset(self, tenant_id: str, name: str, data: bytes) -> str:
        """A file in the tenant's datasets prefix, as the tenant would upload it."""
        return self.storage.put_bytes(tenant_data_prefix(tenant_id) + name, data)


@pytest.fixture(scope="module")
def store(platform: Platform) -> Store:
    return Store(platform.database_url, platform.storage)


@pytest.fixture(scope="module")
def tenant(platform: Platform) -> Tenant:
    return Tenant(*platform.new_tenant("pro"))


@pytest.fixture(scope="session")
def trained_mlp() -> tuple[Any, dict[str, Any], float]:
    return train_digits_mlp(hidden=16, epochs=25)


@pytest.fixture(scope="session")
def digit_rows() -> tuple[np.ndarray, np.ndarray]:
    return digits()


@pytest.fixture(scope="module")
def register_mlp(
    store: Store, trained_mlp: tuple[Any, dict[str, Any], float]
) -> Callable[..., ModelVersionInfo]:
    def register(tenant_id: str, name: str, stage: str = "staging") -> ModelVersionInfo:
        model, architecture, accuracy = trained_mlp
        return register_torch_version(
            store.database_url, store.storage, tenant_id, name, model, architecture,
            {"val_accuracy": accuracy}, stage=stage,  # type: ignore[arg-type]
        )

    return register


def register_tiny_mlp(database_url: str, storage: Any, tenant_id: str, name: str,
                      stage: str = "staging") -> ModelVersionInfo:  # fmt: skip
    """An untrained 2-feature, 2-class MLP in the tenant's registry: enough to predict, and
    rows small enough that 1000 of them fit a body."""
    import torch

    from cluster.zoo import MLP, MLPConfig

    torch.manual_seed(0)
    model = MLP(MLPConfig(in_features=2, num_classes=2, hidden_sizes=[4]))
    architecture = {"type": "mlp", "config": {"in_features": 2, "num_classes": 2,
                                              "hidden_sizes": [4], "dropout": 0.0}}
    schemas = (
        {"type": "tabular", "dtype": "float32", "features": ["a", "b"], "shape": [2]},
        {"type": "classification", "classes": ["no", "yes"]},
    )
    return register_torch_version(
        database_url, storage, tenant_id, name, model, architecture, {},
        stage=stage, schemas=schemas,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def register_tiny(store: Store) -> Callable[..., ModelVersionInfo]:
    """:func:`register_tiny_mlp` in the module's store."""

    def register(tenant_id: str, name: str, stage: str = "staging") -> ModelVersionInfo:
        return register_tiny_mlp(store.database_url, store.storage, tenant_id, name, stage)

    return register


def post_until(
    client: httpx.Client, path: str, body: dict[str, Any], ok: Callable[[httpx.Response], bool],
    deadline_s: float = 90,
) -> httpx.Response:
    """POST until ``ok`` holds (the app may still be starting); the last answer at the deadline."""
    deadline = time.monotonic() + deadline_s
    while True:
        response = client.post(path, json=body)
        if ok(response) or time.monotonic() > deadline:
            return response
        time.sleep(0.5)
