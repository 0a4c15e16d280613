"""The digits MLP as a registered version, written the way the training job writes one
(``model.safetensors`` + ``architecture.json`` in the version's artifact folder), so that a
fresh platform has a model to predict with and tests and benchmarks have a real one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from mlaas import registry
from mlaas.registry import ModelVersionInfo

DEMO_MODEL = "digits-demo"


def digits() -> tuple[np.ndarray, np.ndarray]:
    """The 8x8 digits (1797 rows of 64 pixel values 0-16) and their labels."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.data.astype(np.float32), bunch.target.astype(np.int64)


def train_digits_mlp(
    *, hidden: int = 32, epochs: int = 30, seed: int = 0
) -> tuple[Any, dict[str, Any], float]:
    """A small MLP fitted on 80% of digits; returns (module, architecture, val accuracy)."""
    import torch

    from cluster.zoo import MLP, MLPConfig

    x, y = digits()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    cut = int(0.8 * len(x))
    train, val = order[:cut], order[cut:]
    torch.manual_seed(seed)
    config = MLPConfig(in_features=64, num_classes=10, hidden_sizes=[hidden])
    model = MLP(config)
    model.standardize.fit(torch.from_numpy(x[train]))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    xt, yt = torch.from_numpy(x[train]), torch.from_numpy(y[train])
    for _ in range(epochs):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(xt), yt).backward()
        optimizer.step()
    model.eval()
    with torch.inference_mode():
        accuracy = float((model(torch.from_numpy(x[val])).argmax(1).numpy() == y[val]).mean())
    architecture = {"type": "mlp", "config": {"in_features": 64, "num_classes": 10,
                                              "hidden_sizes": [hidden], "dropout": 0.0}}
    return model, architecture, accuracy


def digits_schemas() -> tuple[dict[str, Any], dict[str, Any]]:
    """Input and output schema as the training job records them for digits."""
    features = [f"pixel_{r}_{c}" for r in range(8) for c in range(8)]
    return (
        {"type": "tabular", "dtype": "float32", "features": features, "shape": [64]},
        {"type": "classification", "classes": [str(i) for i in range(10)]},
    )


def register_torch_version(
    database_url: str,
    storage: Any,
    tenant_id: str,
    model_name: str,
    model: Any,
    architecture: dict[str, Any],
    metrics: dict[str, Any],
    *,
    stage: registry.Stage = "staging",
    schemas: tuple[dict[str, Any], dict[str, Any]] | None = None,
) -> ModelVersionInfo:
    """Publish weights and architecture to the storage (a :class:`~mlaas.storage.Storage`,
    settings, or a local artifacts folder), then register the version."""
    from safetensors.torch import save_file

    from mlaas.artifacts import publish_with
    from mlaas.storage import as_storage

    def write(folder: Path) -> None:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(folder / "model.safetensors"))
        (folder / "architecture.json").write_text(json.dumps(architecture, indent=2))

    input_schema, output_schema = schemas or digits_schemas()
    return publish_with(
        database_url, write, tenant_id=tenant_id, model_name=model_name,
        storage=as_storage(storage), framework="pytorch", architecture=architecture,
        input_schema=input_schema, output_schema=output_schema, metrics=metrics, stage=stage,
        task="classification",
    )  # fmt: skip


def ensure_demo_model(database_url: str, storage: Any, tenant_id: str) -> ModelVersionInfo:
    """The tenant's ``digits-demo@production``, trained and registered on first call."""
    try:
        return registry.get_version(database_url, tenant_id, DEMO_MODEL, "production")
    except LookupError:
        pass
    model, architecture, accuracy = train_digits_mlp()
    return register_torch_version(
        database_url, storage, tenant_id, DEMO_MODEL, model, architecture,
        {"val_accuracy": accuracy}, stage="production",
    )


def register_demo_when_admin_exists(
    database_url: str, storage: Any, *, timeout_s: float = 900, poll_s: float = 2.0
) -> ModelVersionInfo | None:
    """Wait for the admin tenant (``mlaas up`` makes it once the platform is healthy), then
    make sure it owns ``digits-demo@production``. Runs in a replica's background thread."""
    import time

    from mlaas import accounts
    from mlaas.errors import ConflictError

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            admin = accounts.admin_tenant(database_url)
        except Exception:  # database not migrated yet
            admin = None
        if admin is not None:
            try:
                return ensure_demo_model(database_url, storage, admin.id)
            except ConflictError:  # another replica registered it at the same moment
                return registry.get_version(database_url, admin.id, DEMO_MODEL, "production")
        time.sleep(poll_s)
    return None
