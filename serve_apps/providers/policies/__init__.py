"""Routing policies, one small module each; the catalogue names one per route."""

from serve_apps.providers.policies.base import Candidate, RoutingPolicy
from serve_apps.providers.policies.cheapest import CheapestPolicy
from serve_apps.providers.policies.fastest import FastestPolicy
from serve_apps.providers.policies.priority import PriorityPolicy
from serve_apps.providers.policies.weighted import WeightedPolicy

POLICIES: dict[str, RoutingPolicy] = {
    policy.name: policy
    for policy in (PriorityPolicy(), CheapestPolicy(), FastestPolicy(), WeightedPolicy())
}

__all__ = ["POLICIES", "Candidate", "RoutingPolicy"]
