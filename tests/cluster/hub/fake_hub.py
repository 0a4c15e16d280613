"""A local stand-in for the Hugging Face hub's upload API (repo create, preupload, commit),
speaking its wire format on 127.0.0.1 so that ``huggingface_hub.HfApi`` talks to it unchanged.

Every file is offered as a regular (non-LFS) upload, so the client sends contents inline in
the NDJSON commit body; the server keeps them per repo and checks the bearer token."""

from __future__ import annotations

import base64
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_REPO = r"(?P<repo>[^/]+/[^/]+)"
_PREUPLOAD = re.compile(rf"^/api/models/{_REPO}/preupload/(?P<rev>[^/]+)$")
_COMMIT = re.compile(rf"^/api/models/{_REPO}/commit/(?P<rev>[^/]+)$")


@dataclass
class HubState:
    token: str
    base_url: str = ""
    repos: dict[str, dict[str, Any]] = field(default_factory=dict)
    files: dict[str, dict[str, bytes]] = field(default_factory=dict)
    commits: list[dict[str, Any]] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)


def _handler(state: HubState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _reply(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _authorized(self) -> bool:
            if self.headers.get("Authorization") == f"Bearer {state.token}":
                return True
            self._reply(401, {"error": "Invalid credentials in Authorization header"})
            return False

        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            body = self._body()
            if not self._authorized():
                return
            if self.path == "/api/repos/create":
                spec = json.loads(body)
                repo = f"{spec['organization']}/{spec['name']}" if spec.get(
                    "organization") else spec["name"]
                state.repos.setdefault(repo, spec)
                self._reply(200, {"url": f"{state.base_url}/{repo}", "name": repo})
            elif match := _PREUPLOAD.match(self.path):
                files = json.loads(body)["files"]
                self._reply(200, {"files": [
                    {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                    for f in files]})
            elif match := _COMMIT.match(self.path):
                self._commit(match["repo"], body)
            else:
                state.unknown.append(f"POST {self.path}")
                self._reply(404, {"error": f"no route POST {self.path}"})

        def _commit(self, repo: str, body: bytes) -> None:
            lines = [json.loads(line) for line in body.splitlines() if line.strip()]
            header = next(item["value"] for item in lines if item["key"] == "header")
            stored = state.files.setdefault(repo, {})
            for item in lines:
                if item["key"] == "file":
                    value = item["value"]
                    assert value["encoding"] == "base64", value["encoding"]
                    stored[value["path"]] = base64.b64decode(value["content"])
            oid = f"{len(state.commits) + 1:040x}"
            state.commits.append({"repo": repo, "summary": header["summary"], "oid": oid})
            self._reply(200, {"commitUrl": f"{state.base_url}/{repo}/commit/{oid}",
                              "commitOid": oid, "pullRequestUrl": None})

        def do_GET(self) -> None:  # noqa: N802
            state.unknown.append(f"GET {self.path}")
            self._reply(404, {"error": f"no route GET {self.path}"})

    return Handler


class FakeHub:
    """``with FakeHub(token) as hub:`` serves on ``hub.url`` until the block ends."""

    def __init__(self, token: str) -> None:
        self.state = HubState(token=token)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.state))
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self.state.base_url = self.url

    def __enter__(self) -> FakeHub:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
