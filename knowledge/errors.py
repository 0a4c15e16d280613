"""Errors of the knowledge pool (mapped to the documented HTTP shape by the gateway)."""

from __future__ import annotations

from mlaas.errors import ServiceUnavailableError


class KnowledgeUnavailableError(ServiceUnavailableError):
    """The tenant's index or graph cannot be loaded or rebuilt: 503 for knowledge routes only."""

    def __init__(self, reason: str) -> None:
        super().__init__(
            f"The knowledge pool is unavailable: {reason}",
            details={"service": "knowledge", "reason": reason},
            headers={"Retry-After": "30"},
        )
