"""The platform on three Ray nodes (a head with no CPUs and two workers, each in network and
mount namespaces of its own), deployed as the KubeRay RayService is: see conftest.py."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlaas.settings import Settings
from mlaas.storage import Storage, get_storage, tenant_data_prefix
from tests.multinode.conftest import MultiNodePlatform, files_in_worker_homes

pytestmark = pytest.mark.multinode


def _storage(platform: MultiNodePlatform, cache: Path) -> Storage:
    fields = {k.removeprefix("MLAAS_").lower(): v for k, v in platform.env.items()
              if k.startswith("MLAAS_STORAGE_")}  # fmt: skip
    return get_storage(Settings(**{**fields, "storage_cache_dir": str(cache)}))


def test_three_nodes_gateway_replicas_on_different_workers_and_worker_homes_stay_empty(
    mn_platform: MultiNodePlatform,
) -> None:
    nodes = mn_platform.nodes
    workers = [nodes.worker_ip(0), nodes.worker_ip(1)]

    alive = nodes.alive_node_ips()
    gateways = mn_platform.replica_nodes("gateway", "Gateway")
    homes = files_in_worker_homes(mn_platform)

    assert sorted(alive) == sorted([nodes.head_ip, *workers])
    assert sorted(gateways.values()) == sorted(workers), gateways
    assert homes == {ip: [] for ip in workers}, homes


def test_a_jwt_minted_through_one_replica_works_on_both(mn_platform: MultiNodePlatform) -> None:
    _, key = mn_platform.new_tenant()
    with mn_platform.client(key) as client:
        minted = client.post("/v1/auth/token")
    assert minted.status_code == 200, minted.text
    token = minted.json()["access_token"]

    answers = []
    for _ in range(40):  # a connection each: the proxy picks a replica per request
        with mn_platform.client(token) as client:
            answers.append(client.get("/v1/keys"))

    assert [a.status_code for a in answers] == [200] * 40, [a.text for a in answers[:3]]
    served_by = {a.headers["x-mlaas-replica"] for a in answers}
    assert len(served_by) == 2, served_by
    assert minted.headers["x-mlaas-replica"] in served_by


def test_ddp_on_two_worker_nodes_registers_an_s3_version_that_serves(
    mn_platform: MultiNodePlatform, trained: dict[str, Any], tmp_path: Path
) -> None:
    from safetensors.numpy import load_file
    from sklearn.datasets import load_digits

    from tests.test_cluster_state import _forward

    final = trained["final"]
    assert final["status"] == "SUCCEEDED", json.dumps(final)[-3000:]
    version = final["model_version"]
    nodes = mn_platform.nodes
    assert sorted(trained["worker_nodes"]) == sorted([nodes.worker_ip(0), nodes.worker_ip(1)])
    stored_at = mn_platform.artifact_uri(trained["tenant_id"], version["id"])
    assert stored_at.startswith("s3://")
    rows = load_digits().data[:6].astype(np.float32)

    with mn_platform.client(trained["key"]) as client:
        deadline = time.monotonic() + 120
        while True:
            answer = client.post(
                "/v1/predict", json={"model": version["id"], "inputs": rows.tolist()}
            )
            if answer.status_code != 503 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    inference = mn_platform.replica_nodes("inference", "Inference")

    assert answer.status_code == 200, answer.text
    assert inference and set(inference.values()) <= {nodes.worker_ip(0), nodes.worker_ip(1)}
    storage = _storage(mn_platform, tmp_path / "cache")
    key = storage.key_of(stored_at)
    assert key is not None
    folder = storage.fetch_folder(key, cache_id=f"test-{version['id']}")
    assert load_file(str(folder / "model.safetensors"))
    expected = _forward(folder, version, rows)
    assert np.allclose(np.asarray(answer.json()["outputs"]), expected, atol=1e-4)


def test_a_batch_job_over_an_s3_input_succeeds_and_reads_the_same_on_both_replicas(
    mn_platform: MultiNodePlatform, trained: dict[str, Any], tmp_path: Path
) -> None:
    import io

    import pandas as pd
    from sklearn.datasets import load_digits

    # Prepare: 200 digits as Parquet in the tenant's datasets prefix of the platform's bucket
    storage = _storage(mn_platform, tmp_path / "cache")
    buffer = io.BytesIO()
    features = [f"pixel_{r}_{c}" for r in range(8) for c in range(8)]
    pd.DataFrame(load_digits().data[:200].astype(np.float32), columns=features).to_parquet(buffer)
    key = tenant_data_prefix(trained["tenant_id"]) + "mn-digits.parquet"
    storage.put_bytes(key, buffer.getvalue())
    uri = f"{storage.base_uri}/{key}"
    assert uri.startswith("s3://")
    version_id = trained["final"]["model_version"]["id"]
    with mn_platform.client(trained["key"]) as client:
        # Execute
        submitted = client.post("/v1/batch_predict", json={"model": version_id, "input_uri": uri})
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["id"]
        deadline = time.monotonic() + 240
        while True:
            status = client.get(f"/v1/batch_predict/{job_id}").json()
            if status.get("status") in ("SUCCEEDED", "FAILED") or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        by_replica: dict[str, Any] = {}
        for _ in range(40):
            with mn_platform.client(trained["key"]) as one:
                read = one.get(f"/v1/batch_predict/{job_id}")
            by_replica[read.headers["x-mlaas-replica"]] = read.json()
            if len(by_replica) == 2:
                break
        output = client.get(status["output_url"]) if status.get("output_url") else None
    # Assert
    assert status["status"] == "SUCCEEDED", json.dumps(status)
    assert status["rows"] == 200
    assert len(by_replica) == 2, "both gateway replicas answered"
    first, second = by_replica.values()
    assert first == second == status
    assert output is not None and output.status_code == 200
    assert len(pd.read_parquet(io.BytesIO(output.content))) == 200
