"""ASGI middleware of the gateway: request ids, body size limit, and the last-resort 500."""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from mlaas.errors import error_body
from mlaas.logs import get_logger, request_id_var

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
log = get_logger("mlaas.gateway")


def new_request_id() -> str:
    return "req_" + secrets.token_hex(8)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


async def send_error(
    send: Send, status: int, code: str, message: str, request_id: str, details: dict | None = None
) -> None:
    """Send a complete JSON error response in the documented shape."""
    body = json.dumps(error_body(code, message, details, request_id)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _BodyTooLarge(BaseException):  # noqa: N818 - FastAPI would turn an Exception into a 400
    pass


class GatewayMiddleware:
    """Outermost layer: every response gets ``X-Request-ID``, oversized bodies get 413, and an
    exception that escapes the app becomes a 500 in the documented shape with no stack trace."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        replica_id: str = "",
        on_response: Callable[[Scope, int, float], None] | None = None,
        echo_request_id: bool = True,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.replica_id = replica_id.encode()
        self.on_response = on_response
        self.echo_request_id = echo_request_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        client_id = _header(scope, b"x-request-id")
        request_id = (
            client_id
            if client_id is not None and _CLIENT_REQUEST_ID.match(client_id)
            else new_request_id()
        )
        token = request_id_var.set(request_id)
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        response_started = False
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise _BodyTooLarge
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status, response_started = message["status"], True
                headers = [
                    (k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"
                ]
                if self.echo_request_id:
                    headers.append((b"x-request-id", request_id.encode()))
                if self.replica_id:
                    headers.append((b"x-mlaas-replica", self.replica_id))
                message["headers"] = headers
            await send(message)

        try:
            length = _header(scope, b"content-length")
            if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
                raise _BodyTooLarge
            await self.app(scope, limited_receive, send_with_id)
        except _BodyTooLarge:
            if not response_started:
                await self._too_large(send_with_id, request_id)
        except Exception:
            log.exception("unhandled error", extra={"fields": {"path": scope.get("path")}})
            if not response_started:
                await send_error(
                    send_with_id,
                    500,
                    "INTERNAL_ERROR",
                    "Internal server error; quote the request id when reporting it",
                    request_id,
                )
        finally:
            if self.on_response is not None:
                self.on_response(scope, status, time.perf_counter() - started)
            request_id_var.reset(token)

    async def _too_large(self, send: Send, request_id: str) -> None:
        await send_error(
            send,
            413,
            "PAYLOAD_TOO_LARGE",
            f"Request body is larger than the limit of {self.max_body_bytes} bytes",
            request_id,
            {"max_body_bytes": self.max_body_bytes},
        )
