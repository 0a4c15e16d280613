"""Admission calls of one gateway replica, coalesced into one actor call per round trip.

While a call to the admission actor is in flight, the requests that arrive queue up; when it
returns, all of them go in the next call (``Admission.admit_many``), which decides them in
arrival order exactly as single calls would. A lone request therefore goes out at once, and
under load one round trip admits many requests instead of each paying its own.
"""

from __future__ import annotations

import asyncio
from typing import Any

from mlaas.admission import Refusal
from mlaas.errors import ServiceUnavailableError

AdmitRequest = tuple[str, str, str | None, str, dict[str, int] | None]
# (refusal, credentials epoch, registry epoch)
AdmitAnswer = tuple[Refusal | None, int, int]


class AdmissionBatcher:
    """Coalesces ``admit`` calls of one event loop; ``max_batch`` bounds one call's size, and
    a call unanswered after ``timeout_s`` fails its requests with a 503 (the actor is
    restarting, or its node is gone and Ray has not noticed yet)."""

    def __init__(self, actor: Any, *, max_batch: int = 256, timeout_s: float = 30) -> None:
        self.actor = actor
        self.max_batch = max_batch
        self.timeout_s = timeout_s
        self._queue: list[tuple[AdmitRequest, asyncio.Future[AdmitAnswer]]] = []
        self._sender: asyncio.Task[None] | None = None
        self.calls = 0  # actor calls made (the admission test reads it)

    async def admit(
        self,
        subject: str,
        endpoint: str,
        tenant_id: str | None,
        tier: str,
        units: dict[str, int] | None,
    ) -> AdmitAnswer:
        future: asyncio.Future[AdmitAnswer] = asyncio.get_running_loop().create_future()
        self._queue.append(((subject, endpoint, tenant_id, tier, units), future))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.get_running_loop().create_task(self._send())
        return await future

    async def _send(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
            self.calls += 1
            try:
                refusals, credentials_epoch, registry_epoch = await asyncio.wait_for(
                    self.actor.admit_many.remote([request for request, _ in batch]),
                    self.timeout_s,
                )
            except asyncio.CancelledError:  # the replica is shutting down
                for _, future in batch + self._queue:
                    future.cancel()
                self._queue = []
                raise
            except TimeoutError:
                unanswered = ServiceUnavailableError(
                    f"The admission service did not answer within {self.timeout_s:g} s; "
                    "retry shortly",
                    details={"reason": "admission_timeout"},
                    headers={"Retry-After": "2"},
                )
                for _, future in batch:
                    if not future.done():
                        future.set_exception(unanswered)
                continue
            except Exception as error:  # each caller sees the actor's failure as its own
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            for (_, future), refusal in zip(batch, refusals, strict=True):
                if not future.done():
                    future.set_result((refusal, credentials_epoch, registry_epoch))
