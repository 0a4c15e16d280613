"""In a small Ray of this process (never the shared platform's): the platform-info actor
publishes the URL and is replaced on the next start, and a platform actor given
MLAAS_PLATFORM_ACTOR_RESOURCES takes that resource of the node it runs on."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray

from mlaas import discovery
from mlaas.admission import get_or_create_admission
from mlaas.placement import platform_actor_options
from mlaas.settings import REPO_ROOT, Settings
from mlaas.tiers import load_tiers


@pytest.fixture(scope="module")
def small_ray() -> Iterator[None]:
    # address="local": a new Ray for this process, never one already running on the machine.
    # The suite's driver connection to the shared platform (if made) is put back afterwards.
    address = ray.get_runtime_context().gcs_address if ray.is_initialized() else None
    if address:
        ray.shutdown()
    ray.init(address="local", num_cpus=1, resources={"mlaas_state": 1},
             include_dashboard=False, namespace="mlaas", logging_level=logging.ERROR,
             log_to_driver=False)
    yield
    ray.shutdown()
    if address:
        from mlaas.platform import connect_ray

        connect_ray(address)


def test_the_published_url_is_found_and_replaced_by_the_next_start(
    small_ray: None, tmp_path: Path
) -> None:
    settings = Settings(home=tmp_path)

    discovery.publish({"url": "http://10.1.2.3:8000", "ray_address": "10.1.2.3:6379"})
    first = discovery.cluster_url(settings)
    discovery.publish({"url": "http://10.1.2.3:8100", "ray_address": "10.1.2.3:6379"})
    second = discovery.cluster_url(settings)
    discovery.withdraw()

    assert (first, second) == ("http://10.1.2.3:8000", "http://10.1.2.3:8100")
    assert discovery.head_node_ip() == ray.nodes()[0]["NodeManagerAddress"]


def test_a_platform_actor_takes_the_configured_resource(
    small_ray: None, tmp_path: Path
) -> None:
    settings = Settings(home=tmp_path, platform_actor_resources={"mlaas_state": 0.25})
    tiers = load_tiers(REPO_ROOT / "configs" / "tiers.yaml")

    actor = get_or_create_admission(f"sqlite:///{tmp_path / 'mlaas.db'}", tiers,
                                    placement=platform_actor_options(settings))
    answer: Any = ray.get(actor.ping.remote(), timeout=60)
    deadline = time.monotonic() + 10  # the node reports its resources every few 100 ms
    while (left := ray.available_resources().get("mlaas_state")) != pytest.approx(0.75):
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    ray.kill(actor, no_restart=True)

    assert answer == "ok"
    assert left == pytest.approx(0.75)
