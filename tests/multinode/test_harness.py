"""The multi-node harness itself: a Ray head and two worker nodes on one machine, each worker
in its own network namespace (its own address on the harness's bridge) and mount namespace
(a tmpfs over the head's home), joined as one cluster. The platform's multi-node tests
(issue "Runs on a multi-node Ray cluster") build on it."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import _free_port_block
from tests.services.multinode import MultiNodeCluster, namespaces_supported

pytestmark = pytest.mark.multinode


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MultiNodeCluster, Path]]:
    why = namespaces_supported()
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"the multi-node harness {why}")
        pytest.skip(f"the multi-node harness {why}")
    home = tmp_path_factory.mktemp("mn-home")  # stands for the head's MLAAS_HOME
    (home / "head-only.txt").write_text("written on the head")
    nodes = MultiNodeCluster(
        root=tmp_path_factory.mktemp("mn"), hidden=[home], workers=2, cpus_per_node=1
    )
    nodes.start(gcs_port=_free_port_block(5))
    yield nodes, home
    nodes.stop()


def test_three_nodes_join_and_each_worker_has_its_own_address_and_filesystem(
    cluster: tuple[MultiNodeCluster, Path],
) -> None:
    nodes, home = cluster
    # Execute: one task pinned to each node reports its address and what it sees of the home
    seen = json.loads(
        nodes.run_python(f"""
import json, os
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

@ray.remote(num_cpus=0.1)
def look():
    return ray.util.get_node_ip_address(), sorted(os.listdir({str(home)!r}))

answers = {{}}
for node in ray.nodes():
    if node["Alive"]:
        pinned = NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
        answers[node["NodeManagerAddress"]] = ray.get(
            look.options(scheduling_strategy=pinned).remote(), timeout=60)
print(json.dumps(answers))
""")
    )
    # Assert
    workers = [node.ip for node in nodes.nodes]
    assert sorted(seen) == sorted([nodes.head_ip, *workers]), seen
    assert all(seen[ip][0] == ip for ip in seen), "each task ran on the node it was pinned to"
    assert seen[nodes.head_ip][1] == ["head-only.txt"]
    assert all(seen[ip][1] == [] for ip in workers), "workers see none of the head's files"
