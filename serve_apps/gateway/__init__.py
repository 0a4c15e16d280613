"""The gateway application: FastAPI ingress for ``/health`` and every ``/v1`` route."""

from serve_apps.gateway.app import create_app
from serve_apps.gateway.deployment import Gateway, app_builder

__all__ = ["Gateway", "app_builder", "create_app"]
