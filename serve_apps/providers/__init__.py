"""The AI-provider router: catalogue, adapters on the official SDKs, routing policies, retries,
circuit breakers, fallbacks, the response cache, cost and budgets, guardrails, and the keyless
``local`` provider. The Serve deployment lives in :mod:`serve_apps.providers.deployment`; this
package's top level stays light (no SDK imports), because the gateway imports it."""

from serve_apps.providers.catalogue import Catalogue, load_catalogue
from serve_apps.providers.client import ProvidersClient, providers_client


def app_builder(args: dict) -> object:  # type: ignore[type-arg]
    """Serve application builder for ``import_path: serve_apps.providers:app_builder``."""
    from serve_apps.providers.deployment import app_builder as build

    return build(args)


__all__ = ["Catalogue", "ProvidersClient", "app_builder", "load_catalogue", "providers_client"]
