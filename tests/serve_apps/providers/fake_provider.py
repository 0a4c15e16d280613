"""A local fake of two provider wire formats, for tests and benchmarks: OpenAI chat completions
(``POST /v1/chat/completions``) and Anthropic messages (``POST /v1/messages``), both plain and
streaming (SSE), with each format's error bodies and stream error events.

Tests script its behaviour per model: answer with given content (or content made from the
request, e.g. ``rows_reply`` for synthetic rows), answer slowly, fail with a status (and
``Retry-After``), drop the connection, or break a stream after some chunks. A model with no
script left echoes the last user message. Every request received is recorded.

    python -m tests.serve_apps.providers.fake_provider --port 9999   # standalone
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import re
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Step:
    """One scripted answer.

    Attributes:
        content: the answer text (default: an echo of the last user message).
        status: answer with this HTTP error status instead (429, 500, 529, 401, 400...).
        retry_after: the ``Retry-After`` header sent with an error.
        error_message: the error's message (``{key}`` is replaced by the caller's key).
        delay_s: wait this long before answering.
        drop: close the connection without answering.
        fail_after_chunks: in a stream, send this many text chunks then an error event.
        drop_after_chunks: in a stream, send this many text chunks then drop the connection.
        reply: make the answer text from the request (used when ``content`` is None).
    """

    content: str | None = None
    status: int | None = None
    retry_after: str | None = None
    error_message: str = "fake failure"
    delay_s: float = 0.0
    drop: bool = False
    fail_after_chunks: int | None = None
    drop_after_chunks: int | None = None
    reply: Callable[[Received], str] | None = None


@dataclass
class Received:
    wire: str  # "openai" | "anthropic"
    model: str
    body: dict[str, Any]
    api_key: str
    at: float = field(default_factory=time.monotonic)

    @property
    def text(self) -> str:
        parts = [str(m.get("content", "")) for m in self.body.get("messages", [])]
        return "\n".join([str(self.body.get("system", ""))] + parts)


def _words(text: str) -> int:
    return len(text.split())


_ASKED_ROWS = re.compile(r"generate (\d+)", re.IGNORECASE)


def rows_reply(
    make_row: Callable[[random.Random], dict[str, Any]], seed: int = 0
) -> Callable[[Received], str]:
    """A ``Step.reply`` answering a request for synthetic rows as an LLM would: a JSON object
    ``{"rows": [...]}`` with as many rows as the last user message's "generate N" asks (10 when
    it names no count), each from ``make_row``. Every answer draws new rows (one seeded stream
    per reply function), so batches differ as a sampling LLM's do."""
    counter = itertools.count(seed)

    def reply(received: Received) -> str:
        users = [m for m in received.body.get("messages", []) if m.get("role") == "user"]
        asked = _ASKED_ROWS.findall(str(users[-1].get("content", "")) if users else "")
        rng = random.Random(next(counter))
        count = int(asked[-1]) if asked else 10
        return json.dumps({"rows": [make_row(rng) for _ in range(count)]})

    return reply


class FakeProvider:
    """The fake server, run on its own event loop in a daemon thread."""

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.received: list[Received] = []
        self._scripts: dict[str, deque[Step]] = defaultdict(deque)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None

    # ----- control, from the test thread -----

    @property
    def openai_base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def anthropic_base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, model: str, *steps: Step) -> None:
        """Queue answers for ``model``; each request takes the next one."""
        with self._lock:
            self._scripts[model].extend(steps)

    def requests_for(self, model: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.model == model]

    def reset(self, model: str | None = None) -> None:
        with self._lock:
            if model is None:
                self._scripts.clear()
                self.received.clear()
            else:
                self._scripts.pop(model, None)
                self.received = [r for r in self.received if r.model != model]

    def _next_step(self, received: Received) -> Step:
        with self._lock:
            self.received.append(received)
            queue = self._scripts.get(received.model)
            return queue.popleft() if queue else Step()

    # ----- lifecycle -----

    def start(self) -> FakeProvider:
        ready = threading.Event()
        threading.Thread(
            target=self._serve, args=(ready,), daemon=True, name="fake-provider"
        ).start()
        if not ready.wait(30):
            raise RuntimeError("the fake provider did not start")
        return self

    def _serve(self, ready: threading.Event) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self.start_async())
        ready.set()
        self._loop.run_forever()

    async def start_async(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._openai)
        app.router.add_post("/v1/messages", self._anthropic)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, backlog=1024)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def stop(self) -> None:
        if self._loop is not None and self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)

    # ----- shared behaviour -----

    async def _receive(self, request: web.Request, wire: str) -> tuple[Received, Step]:
        body = await request.json()
        key = request.headers.get("x-api-key") or request.headers.get(
            "authorization", ""
        ).removeprefix("Bearer ")
        received = Received(wire=wire, model=str(body.get("model")), body=body, api_key=key)
        step = self._next_step(received)
        if step.delay_s:
            await asyncio.sleep(step.delay_s)
        return received, step

    @staticmethod
    def _answer(received: Received, step: Step) -> str:
        if step.content is not None:
            return step.content
        if step.reply is not None:
            return step.reply(received)
        users = [m for m in received.body.get("messages", []) if m.get("role") == "user"]
        last = users[-1].get("content", "") if users else ""
        return f"echo: {last}"[:2000]

    @staticmethod
    def _drop(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        request.transport.close()
        return web.StreamResponse()

    def _error(self, wire: str, step: Step, received: Received) -> web.Response:
        message = step.error_message.replace("{key}", received.api_key)
        headers = {"retry-after": step.retry_after} if step.retry_after else {}
        if wire == "openai":
            kind = {429: "rate_limit_exceeded", 401: "invalid_api_key"}.get(
                step.status or 500, "server_error"
            )
            body: dict[str, Any] = {
                "error": {"message": message, "type": kind, "param": None, "code": kind}
            }
        else:
            kind = {
                429: "rate_limit_error",
                529: "overloaded_error",
                401: "authentication_error",
                400: "invalid_request_error",
            }.get(step.status or 500, "api_error")
            body = {"type": "error", "error": {"type": kind, "message": message}}
        return web.json_response(body, status=step.status or 500, headers=headers)

    # ----- OpenAI chat completions -----

    async def _openai(self, request: web.Request) -> web.StreamResponse:
        received, step = await self._receive(request, "openai")
        if step.drop:
            return self._drop(request)
        if step.status:
            return self._error("openai", step, received)
        answer = self._answer(received, step)
        usage = {"prompt_tokens": _words(received.text), "completion_tokens": _words(answer)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        head = {"id": "chatcmpl-fake", "created": int(time.time()), "model": received.model}
        if not received.body.get("stream"):
            return web.json_response(
                {
                    **head,
                    "object": "chat.completion",
                    "usage": usage,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": answer},
                            "finish_reason": "stop",
                        }
                    ],
                }
            )
        chunks = [{"role": "assistant", "content": ""}] + [
            {"content": w + " "} for w in answer.split()
        ]
        events = [
            {
                **head,
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": d, "finish_reason": None}],
            }
            for d in chunks
        ]
        events.append(
            {
                **head,
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            }
        )
        if (received.body.get("stream_options") or {}).get("include_usage"):
            events.append(
                {**head, "object": "chat.completion.chunk", "choices": [], "usage": usage}
            )
        error = {
            "error": {"message": step.error_message, "type": "server_error", "code": "server_error"}
        }
        return await self._sse(request, [(None, e) for e in events], step, (None, error), done=True)

    # ----- Anthropic messages -----

    async def _anthropic(self, request: web.Request) -> web.StreamResponse:
        received, step = await self._receive(request, "anthropic")
        if step.drop:
            return self._drop(request)
        if step.status:
            return self._error("anthropic", step, received)
        sampling = sorted({"temperature", "top_p", "top_k"} & set(received.body))
        if sampling:  # as API version 2026-10-21, which the SDK 2.x sends, refuses them
            refusal = {"type": "invalid_request_error",
                       "message": f"{sampling[0]}: Extra inputs are not permitted"}
            return web.json_response({"type": "error", "error": refusal}, status=400)
        answer = self._answer(received, step)
        tokens_in, tokens_out = _words(received.text), _words(answer)
        message = {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": received.model,
            "stop_sequence": None,
        }
        if not received.body.get("stream"):
            return web.json_response(
                {
                    **message,
                    "content": [{"type": "text", "text": answer}],
                    "stop_reason": "end_turn",
                    "usage": {"input_tokens": tokens_in, "output_tokens": tokens_out},
                }
            )
        events: list[tuple[str | None, Any]] = [
            (
                "message_start",
                {
                    "type": "message_start",
                    "message": {
                        **message,
                        "content": [],
                        "stop_reason": None,
                        "usage": {"input_tokens": tokens_in, "output_tokens": 1},
                    },
                },
            ),
            (
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
            ),
            ("ping", {"type": "ping"}),
        ]
        events += [
            (
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": w + " "},
                },
            )
            for w in answer.split()
        ]
        events += [
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "usage": {"output_tokens": tokens_out},
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                },
            ),
            ("message_stop", {"type": "message_stop"}),
        ]
        error = (
            "error",
            {"type": "error", "error": {"type": "overloaded_error", "message": step.error_message}},
        )
        return await self._sse(
            request, events, step, error, done=False, text_events=("content_block_delta",)
        )

    async def _sse(
        self,
        request: web.Request,
        events: list[tuple[str | None, Any]],
        step: Step,
        error: tuple[str | None, Any],
        *,
        done: bool,
        text_events: tuple[str, ...] = (),
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        texts_sent = 0
        for name, data in events:
            is_text = (
                name in text_events
                if text_events
                else any(c.get("delta", {}).get("content") for c in data.get("choices", []))
            )
            if (
                is_text
                and step.fail_after_chunks is not None
                and texts_sent >= step.fail_after_chunks
            ):
                await response.write(self._event(*error))
                return response
            if (
                is_text
                and step.drop_after_chunks is not None
                and texts_sent >= step.drop_after_chunks
            ):
                assert request.transport is not None
                request.transport.close()
                return response
            texts_sent += is_text
            await response.write(self._event(name, data))
        if done:
            await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    @staticmethod
    def _event(name: str | None, data: Any) -> bytes:
        prefix = f"event: {name}\n" if name else ""
        return f"{prefix}data: {json.dumps(data)}\n\n".encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()

    async def serve_forever() -> None:
        await FakeProvider(args.port).start_async()
        await asyncio.Event().wait()

    asyncio.run(serve_forever())


if __name__ == "__main__":
    main()
