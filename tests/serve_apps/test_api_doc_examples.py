"""The API documentation's examples, run as written against the shared platform.

The examples are read from ``../shared/reference/api-documentation.md`` at test time, so the
test follows the document: the Python SDK example with the real ``requests``, each cURL
example with the real ``curl``, and each documented request body. Only the base URL and an
``Authorization`` header are changed. Each answer is the documented response (its top-level
fields) or the documented error shape with a documented error code; what cannot exist here
(a ``resnet50`` on ``custom_images``) must be the latter.
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Platform

REPO = Path(__file__).resolve().parents[2]
API_DOC = REPO.parent / "shared" / "reference" / "api-documentation.md"
HTTP_VERBS = ("get", "post", "put", "patch", "delete", "head", "options", "request")
_FENCE = re.compile(r"^```(\w*)\s*$")
_ENDPOINT = re.compile(r"^\*\*(GET|POST|PUT|PATCH|DELETE)\*\*\s+`([^`]+)`")


@dataclass(frozen=True)
class CodeBlock:
    """A fenced block with where it stands: its heading, endpoint and bold label."""

    lang: str
    code: str
    heading: str
    endpoint: tuple[str, str] | None
    label: str


@dataclass
class ApiDoc:
    """What the tests take from the document."""

    blocks: list[CodeBlock]
    base_url: str = ""
    error_codes: set[str] = field(default_factory=set)

    def block(self, heading: str, lang: str) -> CodeBlock:
        found = [b for b in self.blocks if b.heading == heading and b.lang == lang]
        assert len(found) == 1, f"the document has one {lang} block under {heading!r}"
        return found[0]

    def json_of(self, endpoint: tuple[str, str], label: str) -> Any:
        for block in self.blocks:
            if block.endpoint == endpoint and block.label == label and block.lang == "json":
                return json.loads(block.code)
        return None

    @property
    def error_shape(self) -> dict[str, Any]:
        return json.loads(self.block("Error Response Format", "json").code)  # type: ignore[no-any-return]


def parse_api_doc(text: str) -> ApiDoc:
    blocks: list[CodeBlock] = []
    heading, label = "", ""
    endpoint: tuple[str, str] | None = None
    lines = iter(text.splitlines())
    codes: set[str] = set()
    for line in lines:
        if line.startswith("#"):
            heading, label, endpoint = line.lstrip("#").strip(), "", None
        elif match := _ENDPOINT.match(line):
            endpoint = (match.group(1), match.group(2))
        elif line.startswith("**") and line.rstrip().endswith(":**"):
            label = line.strip("*: ")
        elif heading == "Common Error Codes" and (code := re.match(r"^\|\s*`([A-Z_]+)`", line)):
            codes.add(code.group(1))
        elif fence := _FENCE.match(line):
            body = []
            for inner in lines:
                if inner.startswith("```"):
                    break
                body.append(inner)
            blocks.append(CodeBlock(fence.group(1), "\n".join(body), heading, endpoint, label))
    doc = ApiDoc(blocks=blocks, error_codes=codes)
    doc.base_url = doc.block("Base URL", "").code.strip()
    return doc


def _load() -> ApiDoc | None:
    return parse_api_doc(API_DOC.read_text()) if API_DOC.is_file() else None


DOC = _load()
needs_doc = pytest.mark.skipif(DOC is None, reason=f"{API_DOC} is not there")


def curl_commands(doc: ApiDoc) -> list[tuple[str, str]]:
    """(the comment above it, the command) for each command of the cURL block."""
    commands: list[tuple[str, str]] = []
    comment, current = "", ""
    for line in doc.block("cURL Examples", "bash").code.splitlines():
        if not current and (line.startswith("#") or not line.strip()):
            comment = line.lstrip("# ").strip() or comment
            continue
        current += line + "\n"
        if line.endswith("\\") or not _complete(current):
            continue
        commands.append((comment, current.strip()))
        current = ""
    assert not current, f"an unfinished command: {current}"
    return commands


def shell_words(command: str) -> list[str]:
    return shlex.split(command.replace("\\\n", " "))


def _complete(command: str) -> bool:
    try:
        shell_words(command)
    except ValueError:  # a quote still open: the command goes on
        return False
    return True


def documented_bodies(doc: ApiDoc) -> list[tuple[tuple[str, str], dict[str, Any]]]:
    bodies = []
    for block in doc.blocks:
        if block.label == "Request Body" and block.endpoint and block.lang == "json":
            bodies.append((block.endpoint, json.loads(block.code)))
    return bodies


# --- checks -------------------------------------------------------------------------------


def assert_documented_error(body: Any, doc: ApiDoc) -> None:
    """The error shape of the document, with one of its error codes."""
    shape = doc.error_shape
    assert isinstance(body, dict) and set(shape) <= set(body), body
    assert set(shape["error"]) <= set(body["error"]), body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert isinstance(body["error"]["details"], dict)
    assert isinstance(body["timestamp"], str) and isinstance(body["request_id"], str)
    assert body["error"]["code"] in doc.error_codes, (body["error"]["code"], doc.error_codes)


def assert_documented_answer(
    status_code: int, body: Any, endpoint: tuple[str, str], doc: ApiDoc
) -> str:
    """A success with every top-level field of the documented response, or the documented
    error shape; returns which."""
    if status_code >= 400:
        assert_documented_error(body, doc)
        return "error"
    assert 200 <= status_code < 300, (status_code, body)
    documented = doc.json_of(endpoint, "Response")
    assert documented is not None, f"no documented response for {endpoint}"
    missing = set(documented) - set(body)
    assert not missing, f"{endpoint} answered without {sorted(missing)}: {body}"
    return "success"


def endpoint_of_url(url: str, method: str, doc: ApiDoc) -> tuple[str, str]:
    return (method.upper(), url.removeprefix(doc.base_url).split("?")[0])


# --- the Python SDK example ---------------------------------------------------------------


class AsDeployedHere(ast.NodeTransformer):
    """The example with the platform's base URL and an Authorization header on each request
    of ``requests``/``httpx``; nothing else changes."""

    def __init__(self, documented_base: str, base: str, key: str) -> None:
        self.documented_base, self.base, self.key = documented_base, base, key
        self.calls_changed = 0

    def visit_Constant(self, node: ast.Constant) -> ast.AST:  # noqa: N802 - ast's naming
        if isinstance(node.value, str) and node.value.startswith(self.documented_base):
            replaced = self.base + node.value[len(self.documented_base):]
            return ast.copy_location(ast.Constant(replaced), node)
        return node

    def visit_Call(self, node: ast.Call) -> ast.AST:  # noqa: N802 - ast's naming
        self.generic_visit(node)
        func = node.func
        library = isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and (
            func.value.id in ("requests", "httpx"))  # fmt: skip
        if library and func.attr in HTTP_VERBS:  # type: ignore[attr-defined]
            assert all(k.arg != "headers" for k in node.keywords), "the example sets headers"
            header = ast.parse(repr({"Authorization": f"Bearer {self.key}"}), mode="eval").body
            node.keywords.append(ast.keyword(arg="headers", value=header))
            self.calls_changed += 1
        return node


@pytest.fixture(scope="module")
def tenant(platform: Platform) -> tuple[str, str]:
    tenant_id, key = platform.new_tenant("pro")
    platform.secrets_seen.add(key)  # sent by requests and curl, not through platform.client
    return tenant_id, key


@needs_doc
def test_the_python_sdk_example_runs_with_only_the_url_and_the_key_changed(
    platform: Platform, tenant: tuple[str, str]
) -> None:
    assert DOC is not None
    _, key = tenant
    example = DOC.block("Python SDK", "python").code
    rewrite = AsDeployedHere(DOC.base_url, platform.url, key)
    tree = ast.fix_missing_locations(rewrite.visit(ast.parse(example)))
    namespace: dict[str, Any] = {"__name__": "api_doc_python_sdk"}
    printed = io.StringIO()

    with contextlib.redirect_stdout(printed):
        exec(compile(tree, f"{API_DOC.name}#python-sdk", "exec"), namespace)  # noqa: S102
    api = namespace["api"]
    synthetic = DOC.json_of(("POST", "/v1/ai/synthetic-data"), "Request Body")
    analyze = DOC.json_of(("POST", "/v1/ai/analyze"), "Request Body")
    # The example's other methods, with the document's own request values
    generated = api.generate_synthetic_data(
        synthetic["model_description"], synthetic["existing_data"], synthetic["target_count"]
    )
    analysed = api.analyze_model(
        analyze["model_description"], analyze["data_sample"], analyze["performance_metrics"]
    )

    assert rewrite.calls_changed > 0, "the example makes its requests with requests or httpx"
    status = namespace["status"]
    assert printed.getvalue() == f"Services configured: {status['configured_services']}\n"
    assert assert_documented_answer(200, status, ("GET", "/v1/ai/status"), DOC) == "success"
    for endpoint, body in ((("POST", "/v1/ai/synthetic-data"), generated),
                           (("POST", "/v1/ai/analyze"), analysed)):  # fmt: skip
        assert_documented_answer(400 if "error" in body else 200, body, endpoint, DOC)


# --- the cURL examples --------------------------------------------------------------------


def _curl_cases() -> list[Any]:
    if DOC is None:
        return [pytest.param("", "", marks=needs_doc, id="no-doc")]
    return [pytest.param(comment, command, id=comment or command[:40])
            for comment, command in curl_commands(DOC)]  # fmt: skip


@pytest.mark.parametrize(("comment", "command"), _curl_cases())
def test_each_curl_example_runs_with_only_the_url_and_the_key_changed(
    platform: Platform, tenant: tuple[str, str], comment: str, command: str
) -> None:
    assert DOC is not None
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    _, key = tenant
    argv = shell_words(command)
    assert argv[0] == "curl", command
    urls = [a for a in argv if a.startswith(DOC.base_url)]
    method = argv[argv.index("-X") + 1] if "-X" in argv else "GET"
    assert len(urls) == 1, command
    request = [platform.url + a[len(DOC.base_url):] if a in urls else a for a in argv[1:]]
    # -sS and --write-out shape only what curl prints (the status after the body)
    shown = ["-sS", "--write-out", "\n%{http_code}"]

    done = subprocess.run(
        [curl, "-H", f"Authorization: Bearer {key}", *shown, *request],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    text, _, code = done.stdout.rpartition("\n")
    endpoint = endpoint_of_url(urls[0], method, DOC)
    assert_documented_answer(int(code), json.loads(text), endpoint, DOC)


# --- the documented request bodies --------------------------------------------------------

# What the document asks for that cannot exist here: the field the refusal must name
CANNOT_EXIST_HERE = {("POST", "/v1/models/train"): "model_config.architecture"}


def _body_cases() -> list[Any]:
    if DOC is None:
        return [pytest.param(("", ""), {}, marks=needs_doc, id="no-doc")]
    return [pytest.param(endpoint, body, id=f"{endpoint[0]} {endpoint[1]}")
            for endpoint, body in documented_bodies(DOC)]  # fmt: skip


@pytest.mark.parametrize(("endpoint", "body"), _body_cases())
def test_each_documented_request_body_gets_the_documented_answer_or_error_shape(
    platform: Platform, tenant: tuple[str, str], endpoint: tuple[str, str], body: dict[str, Any]
) -> None:
    assert DOC is not None
    _, key = tenant
    method, path = endpoint

    with platform.client(key) as client:
        response: httpx.Response = client.request(method, path, json=body, timeout=180)

    outcome = assert_documented_answer(response.status_code, response.json(), endpoint, DOC)
    if endpoint in CANNOT_EXIST_HERE:
        error = response.json()["error"]
        assert outcome == "error" and response.status_code == 422, response.text
        assert error["code"] == "VALIDATION_ERROR"
        assert error["details"]["field"] == CANNOT_EXIST_HERE[endpoint]
        assert set(DOC.error_shape["error"]["details"]) <= set(error["details"])
