"""On a cluster the stateless Serve deployments keep a replica on a second node; one host keeps
the Serve file's counts (``mlaas.kuberay.CLUSTER_REPLICAS``)."""

from __future__ import annotations

from pathlib import Path

import yaml

from mlaas import kuberay


def test_the_stateless_deployments_keep_a_replica_on_a_second_node_on_a_cluster_only(
    tmp_path: Path,
) -> None:
    # Prepare: one host's file with one replica each, autoscaled and fixed
    source = yaml.safe_load(kuberay.SERVE_CONFIG.read_text())
    inference = next(a for a in source["applications"] if a["name"] == "inference")
    for deployment in inference["deployments"]:
        deployment.pop("num_replicas", None)
        deployment.pop("autoscaling_config", None)
    inference["deployments"][0]["autoscaling_config"] = {"min_replicas": 1, "max_replicas": 1}
    inference["deployments"][1]["num_replicas"] = 1
    one_host = tmp_path / "mlaas.yaml"
    one_host.write_text(yaml.safe_dump(source))

    # Execute
    rendered = kuberay.serve_config_v2(one_host)

    # Assert
    by_name = {d["name"]: d for a in rendered["applications"] for d in a.get("deployments", [])}
    assert by_name["Inference"]["autoscaling_config"] == {"min_replicas": 2, "max_replicas": 2}
    assert by_name["Embedder"]["num_replicas"] == 2
    for name in ("Gateway", "Inference", "Embedder"):
        assert by_name[name]["max_replicas_per_node"] == 1, name
    for name in ("KnowledgePool", "ProviderRouter"):  # hold an index, or state per process
        assert by_name[name]["num_replicas"] == 1 and "max_replicas_per_node" not in by_name[name]
    assert yaml.safe_load(one_host.read_text()) == source  # the host's file is left alone
    committed = yaml.safe_load(kuberay.committed_serve_config_v2())
    deployments = {d["name"]: d for a in committed["applications"] for d in a["deployments"]}
    assert deployments["Inference"]["autoscaling_config"]["min_replicas"] >= 2
    assert deployments["Embedder"]["num_replicas"] >= 2
    assert deployments["Inference"]["max_replicas_per_node"] == 1
