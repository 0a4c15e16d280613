"""The gateway's side of the ``knowledge`` application: calls through a deployment handle,
the replica's own errors raised again as themselves, anything else a 503 for knowledge only."""

from __future__ import annotations

from typing import Any

from mlaas.errors import MlaasError, ServiceUnavailableError

APP_NAME = "knowledge"
DEPLOYMENT = "KnowledgePool"


class KnowledgeClient:
    """One per gateway replica; the handle is made on first use."""

    def __init__(self, app_name: str = APP_NAME) -> None:
        self.app_name = app_name
        self._handle: Any = None

    def handle(self) -> Any:
        if self._handle is None:
            from ray import serve

            self._handle = serve.get_deployment_handle(DEPLOYMENT, app_name=self.app_name)
        return self._handle

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return await getattr(self.handle(), method).remote(*args, **kwargs)
        except MlaasError:
            raise
        except Exception as error:  # Ray wraps what the replica raised
            cause = getattr(error, "cause", None)
            if isinstance(cause, MlaasError):
                raise cause from None
            raise ServiceUnavailableError(
                f"The knowledge pool failed ({type(error).__name__}); retry, or see `mlaas status`",
                details={"application": self.app_name},
                headers={"Retry-After": "1"},
            ) from None


knowledge_client = KnowledgeClient()
