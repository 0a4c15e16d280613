"""The gateway's side of the ``providers`` application: calls through a deployment handle, with
the router's errors raised again as themselves (not wrapped in Ray's task error)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from mlaas.errors import MlaasError, ServiceUnavailableError

APP_NAME = "providers"
DEPLOYMENT_NAME = "ProviderRouter"
RETRY_AFTER_S = "2"


def _unwrapped(error: Exception) -> Exception:
    cause = getattr(error, "cause", None)
    if isinstance(cause, MlaasError):
        return cause
    if isinstance(error, MlaasError):
        return error
    # A replica or the provider-state actor died or restarts: worth a retry, unlike the
    # router's own 503 after every provider failed (which says ``x-should-retry: false``).
    return ServiceUnavailableError(
        f"The providers application failed ({type(error).__name__}); retry shortly, or see "
        "`mlaas status`",
        details={"application": APP_NAME},
        headers={"Retry-After": RETRY_AFTER_S},
    )


class ProvidersClient:
    """One per gateway replica; the handle is made on first use (the app may start later)."""

    def __init__(self, app_name: str = APP_NAME, deployment_name: str = DEPLOYMENT_NAME) -> None:
        self.app_name = app_name
        self.deployment_name = deployment_name
        self._handle: Any = None

    @property
    def handle(self) -> Any:
        if self._handle is None:
            from ray import serve

            self._handle = serve.get_deployment_handle(self.deployment_name, app_name=self.app_name)
        return self._handle

    async def call(self, method: str, *args: Any) -> Any:
        """``method`` of the router, awaited.

        Raises:
            MlaasError: what the router raised, or SERVICE_UNAVAILABLE when the app is down.
        """
        try:
            return await getattr(self.handle, method).remote(*args)
        except MlaasError:
            raise
        except Exception as error:  # Ray wraps what the replica raised
            raise _unwrapped(error) from None

    async def stream(self, method: str, *args: Any) -> AsyncIterator[Any]:
        """Items a streaming router method yields; its errors raised again as themselves."""
        generator = getattr(self.handle.options(stream=True), method).remote(*args)
        try:
            async for item in generator:
                yield item
        except MlaasError:
            raise
        except Exception as error:
            raise _unwrapped(error) from None


providers_client = ProvidersClient()
