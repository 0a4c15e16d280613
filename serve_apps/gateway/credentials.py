"""A per-replica cache of verified credentials, dropped whenever a key is revoked anywhere.

Each admission answer carries the cluster's credentials epoch; a changed epoch empties the
cache and re-verifies the credential at hand, so a revoked key fails on its next request on
every replica. Entries also expire after ``ttl_s`` (and never outlive their JWT), which bounds
changes made to the database behind the platform's back.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

import jwt

from mlaas.auth import Principal


@dataclass(frozen=True)
class _Entry:
    principal: Principal
    epoch: int | None
    expires_at: float


class CredentialCache:
    def __init__(self, *, ttl_s: float = 10.0, max_entries: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.epoch: int | None = None
        self._entries: dict[str, _Entry] = {}

    @staticmethod
    def _key(authorization: str) -> str:
        return hashlib.sha256(authorization.encode()).hexdigest()

    def get(self, authorization: str | None) -> Principal | None:
        if not authorization:
            return None
        entry = self._entries.get(self._key(authorization))
        if entry is None or entry.epoch != self.epoch or entry.expires_at <= time.monotonic():
            return None
        return entry.principal

    def put(self, authorization: str, principal: Principal, epoch: int | None) -> None:
        """Remember a credential verified while ``epoch`` was the newest one seen."""
        expires_at = time.monotonic() + self.ttl_s
        credential = authorization.partition(" ")[2].strip()
        if not credential.startswith("mlk_"):
            # authenticate() required "exp" when it verified this token.
            exp = jwt.decode(credential, options={"verify_signature": False})["exp"]
            expires_at = min(expires_at, time.monotonic() + float(exp) - time.time())
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[self._key(authorization)] = _Entry(principal, epoch, expires_at)

    def observe_epoch(self, epoch: int) -> bool:
        """Record the newest epoch; True (and an empty cache) when it changed."""
        if epoch == self.epoch:
            return False
        self.epoch = epoch
        self._entries.clear()
        return True
