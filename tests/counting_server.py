"""A local HTTP server that answers every request like an S3 object and counts what it saw:
the target of a server-side request forgery, so a test can assert that nothing reached it."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# What a fetched "object" holds: a CSV whose header a leaky error message would quote.
BODY = b"internal_secret_header,other\n1,2\n"


class CountingServer:
    """``with CountingServer() as server``: listens on 127.0.0.1; ``server.requests`` lists
    (method, path) of every request."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []
        seen = self.requests

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, with_body: bool) -> None:
                seen.append((self.command, self.path))
                self.send_response(200)
                self.send_header("Content-Length", str(len(BODY)))
                self.send_header("Content-Type", "text/csv")
                self.send_header("Last-Modified", "Mon, 01 Jan 2024 00:00:00 GMT")
                self.end_headers()
                if with_body:
                    self.wfile.write(BODY)

            def do_HEAD(self) -> None:  # noqa: N802 - the name http.server dispatches to
                self._answer(False)

            def do_GET(self) -> None:  # noqa: N802
                self._answer(True)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def ssrf_uris(self) -> list[str]:
        """The issue's URI, and a variant this pyarrow really fetches from (its AWS SDK
        refuses the region ``x.csv``; an endpoint with a path still ends in ``.csv``)."""
        return [
            f"s3://b/k?endpoint_override=127.0.0.1:{self.port}&scheme=http&region=x.csv",
            f"s3://b/k?scheme=http&region=us-east-1&endpoint_override=127.0.0.1:{self.port}/x.csv",
        ]

    def __enter__(self) -> CountingServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
