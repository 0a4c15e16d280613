"""Where the platform's own actors run: admission, provider state, federated coordinators,
knowledge shards and encoders, and the platform-info actor.

By default Ray's scheduler places them (usually on the node of the replica that created
them, which is not necessarily the head). ``MLAAS_PLATFORM_ACTOR_RESOURCES`` pins them to the
nodes that offer a custom resource: set ``MLAAS_PLATFORM_ACTOR_RESOURCES='{"mlaas_state":
0.001}'`` everywhere, and ``MLAAS_NODE_RESOURCES='{"mlaas_state": 1}'`` on the nodes (at least
two, so that a restart finds one) that may host them. Each actor then takes 0.001 of a node's
``mlaas_state``, so one node holds up to 1000 of them.
"""

from __future__ import annotations

import json
from typing import Any

from mlaas.errors import ConfigurationError
from mlaas.settings import Settings


def platform_actor_options(settings: Settings) -> dict[str, Any]:
    """Extra ``.options(...)`` of a platform actor: its custom resources, when configured."""
    if not settings.platform_actor_resources:
        return {}
    return {"resources": dict(settings.platform_actor_resources)}


def require_offered(settings: Settings, cluster_resources: dict[str, float]) -> None:
    """Refuse actor resources no node of the cluster offers (the actors would wait forever).

    Raises:
        ConfigurationError: naming the resources and the setting that offers them.
    """
    missing = sorted(set(settings.platform_actor_resources) - set(cluster_resources))
    if missing:
        offer = json.dumps({name: 1 for name in missing})
        raise ConfigurationError(
            f"MLAAS_PLATFORM_ACTOR_RESOURCES asks for {', '.join(missing)}, which no node of "
            f"the cluster offers: start the head or join a node with MLAAS_NODE_RESOURCES="
            f"'{offer}'",
            details={"missing": missing},
        )
