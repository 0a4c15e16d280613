"""A per-replica cache of resolved model references (``digits@production`` -> its version).

Every registry change (a registration, a stage change, a deletion) bumps the cluster's
registry epoch in the admission actor; each admission answer carries it, and a changed epoch
empties the cache before the request resolves its model. A request therefore never sees a
version older than the last change committed before it was admitted. Entries also expire
(``mutable_ttl_s`` for references whose target moves, such as ``@production`` or a bare name;
``ttl_s`` for a version id or number), which bounds changes made without a running cluster,
for example by a CLI on its own. Unknown references are not cached.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict

from starlette.concurrency import run_in_threadpool

from mlaas.model_store import resolve_version
from mlaas.registry import ModelVersionInfo

_FIXED = re.compile(r"^(mv_[0-9a-f]+|[^@]+@\d+)$")


class VersionCache:
    def __init__(
        self, *, ttl_s: float = 10.0, mutable_ttl_s: float = 2.0, max_entries: int = 4096
    ) -> None:
        self.ttl_s, self.mutable_ttl_s, self.max_entries = ttl_s, mutable_ttl_s, max_entries
        self.epoch: int | None = None
        self._entries: OrderedDict[tuple[str, str], tuple[ModelVersionInfo, float]] = (
            OrderedDict()
        )

    def observe_epoch(self, epoch: int) -> None:
        """Record the newest registry epoch; a change drops every entry."""
        if epoch != self.epoch:
            self.epoch = epoch
            self._entries.clear()

    async def resolve(self, database_url: str, tenant_id: str, reference: str) -> ModelVersionInfo:
        """The version ``reference`` names for ``tenant_id`` (see ``resolve_version``)."""
        key = (tenant_id, (reference or "").strip())
        cached = self._entries.get(key)
        now = time.monotonic()
        if cached is not None and cached[1] > now:
            self._entries.move_to_end(key)
            return cached[0]
        epoch = self.epoch
        version = await run_in_threadpool(resolve_version, database_url, tenant_id, reference)
        if epoch == self.epoch:  # not resolved across a registry change
            ttl = self.ttl_s if _FIXED.match(key[1]) else self.mutable_ttl_s
            self._entries[key] = (version, time.monotonic() + ttl)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return version
