"""The platform core: settings, errors, database, auth, tiers and quotas, usage metering."""

from mlaas.errors import (
    ConfigurationError,
    ForbiddenError,
    MlaasError,
    NotFoundError,
    QuotaExceededError,
    RateLimitExceededError,
    ServiceUnavailableError,
    UnauthorizedError,
    ValidationError,
)
from mlaas.settings import Settings, get_settings

__version__ = "0.1.0"

__all__ = [
    "ConfigurationError",
    "ForbiddenError",
    "MlaasError",
    "NotFoundError",
    "QuotaExceededError",
    "RateLimitExceededError",
    "ServiceUnavailableError",
    "Settings",
    "UnauthorizedError",
    "ValidationError",
    "__version__",
    "get_settings",
]
