"""``mlaas knowledge ingest|query``: the knowledge pool from the command line, through the
HTTP API with an API key (so it works against any platform, local or remote, and the server
does the embedding on its actor pool). ``knowledge`` is imported inside commands only, because
the ``mlaas`` package depends on no other package of the repo."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from mlaas.settings import Settings

knowledge_app = typer.Typer(help="Knowledge pool: ingest a folder, query it.")
console = Console()
err = Console(stderr=True)

UrlOption = Annotated[str | None, typer.Option(
    help="Platform URL (default: MLAAS_URL, else what `mlaas up` published)")]
KeyOption = Annotated[str | None, typer.Option(
    "--api-key", help="API key (default: $MLAAS_API_KEY, else $MLAAS_HOME/admin_key)")]


def _fail(message: str) -> None:
    err.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(1)


def _client(url: str | None, api_key: str | None) -> httpx.Client:
    settings = Settings()
    key = api_key or os.environ.get("MLAAS_API_KEY")
    if not key and (settings.home / "admin_key").exists():
        key = (settings.home / "admin_key").read_text().strip()
    if not key:
        _fail("no API key: pass --api-key, set MLAAS_API_KEY, or run on the platform's host")
    if url is None:
        from mlaas.discovery import client_url

        url = client_url(settings)
    return httpx.Client(base_url=url, timeout=600,
                        headers={"Authorization": f"Bearer {key}"})


def _files(folder: Path) -> list[tuple[Path, str]]:
    from knowledge import content_type_of

    found = []
    for path in sorted(folder.rglob("*")):
        kind = content_type_of(path.name) if path.is_file() else None
        if kind and not any(part.startswith(".") for part in path.relative_to(folder).parts):
            found.append((path, kind))
    return found


def _check(response: httpx.Response) -> dict[str, Any]:
    if response.status_code >= 400:
        try:
            error = response.json()["error"]
            _fail(f"{response.status_code} {error['code']}: {error['message']}")
        except (ValueError, KeyError):
            _fail(f"{response.status_code}: {response.text[:500]}")
    return response.json()  # type: ignore[no-any-return]


def _document(path: Path, kind: str, folder: Path, contributor: str | None,
              domains: list[str]) -> dict[str, Any] | None:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    if not text.strip():
        return None
    doc = {"content": text, "content_type": kind, "title": path.name,
           "source": str(path.relative_to(folder)), "domains": domains}
    if contributor:
        doc["contributor"] = contributor
    return doc


@knowledge_app.command("ingest")
def ingest(
    folder: Annotated[Path, typer.Argument(help="Folder of .md, .txt, .json, .jsonl files")],
    contributor: Annotated[str | None, typer.Option(help="Credited contributor")] = None,
    domain: Annotated[list[str] | None, typer.Option(help="Domain tag (repeatable)")] = None,
    batch: Annotated[int, typer.Option(min=1, max=64, help="Documents per request")] = 16,
    chunk_size: Annotated[int, typer.Option(help="Words per chunk")] = 160,
    chunk_overlap: Annotated[int, typer.Option(help="Words shared by neighbours")] = 32,
    url: UrlOption = None,
    api_key: KeyOption = None,
) -> None:
    """Ingest every accepted file under FOLDER (re-ingesting unchanged files costs nothing)."""
    if not folder.is_dir():
        _fail(f"{folder} is not a folder")
    files = _files(folder)
    if not files:
        _fail(f"no .md, .markdown, .txt, .json or .jsonl files under {folder}")
    totals = {"created": 0, "unchanged": 0, "skipped": 0, "chunks": 0}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with _client(url, api_key) as client, Progress(*columns, console=console) as progress:
        task = progress.add_task("ingesting", total=len(files))
        for start in range(0, len(files), batch):
            group = files[start : start + batch]
            docs = [d for p, k in group
                    if (d := _document(p, k, folder, contributor, domain or [])) is not None]
            totals["skipped"] += len(group) - len(docs)
            if docs:
                body = {"documents": docs, "chunk_size": chunk_size, "chunk_overlap": chunk_overlap}
                result = _check(client.post("/v1/knowledge/documents", json=body))
                for item in result["documents"]:
                    totals[item["status"]] += 1
                    totals["chunks"] += item["chunks"] if item["status"] == "created" else 0
            progress.update(task, advance=len(group), description=group[-1][0].name[:30])
    console.print(f"{totals['created']} created ({totals['chunks']} chunks), "
                  f"{totals['unchanged']} unchanged, {totals['skipped']} skipped (empty or "
                  "not UTF-8)", highlight=False)


@knowledge_app.command("query")
def query(
    text: Annotated[str, typer.Argument(help="The question")],
    k: Annotated[int, typer.Option("-k", min=1, max=50, help="Results")] = 5,
    domain: Annotated[list[str] | None, typer.Option(help="Only these domains")] = None,
    mode: Annotated[str, typer.Option(help="hybrid (BM25 + MiniLM, fused), dense or lexical")]
    = "hybrid",
    expand: Annotated[bool, typer.Option(help="Also expand through the concept graph")] = False,
    url: UrlOption = None,
    api_key: KeyOption = None,
) -> None:
    """Print the best chunks with their sources and why each was chosen."""
    body = {"query": text, "k": k, "mode": mode, "expand": expand, "domains": domain or None}
    with _client(url, api_key) as client:
        result = _check(client.post("/v1/knowledge/query", json=body))
    table = Table("#", "score", "source", "text", "why")
    for row in result["results"]:
        source = row["document"]["source"] or row["document"]["title"]
        if row["chunk"].get("section"):
            source += f" > {row['chunk']['section']}"
        table.add_row(str(row["rank"]), f"{row['score']:.3f}",
                      f"{source} #{row['chunk']['ordinal']}", row["chunk"]["text"][:160],
                      row["why"]["reason"])
    console.print(table)
