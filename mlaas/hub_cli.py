"""``mlaas hub import|export``: Hugging Face import and export (operator commands, run on the
platform's host). The work is in ``cluster.hub``, imported inside each command, because the
``mlaas`` package depends on no other package of the repo."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from mlaas import accounts
from mlaas.db import require_current_schema
from mlaas.errors import MlaasError
from mlaas.settings import Settings

hub_app = typer.Typer(help="Hugging Face import and export of registered models.")
console = Console()


def _hub() -> Any:
    return importlib.import_module("cluster.hub")


def _tenant(url: str, tenant: str | None) -> str:
    if tenant:
        return tenant
    admin = accounts.admin_tenant(url)
    if admin is None:
        raise MlaasError("No admin tenant yet: run `mlaas up` once, or pass --tenant")
    return admin.id


@hub_app.command("import")
def hub_import(
    source: Annotated[str, typer.Argument(help="A local model folder or a hub repo id")],
    revision: Annotated[str | None, typer.Option(help="Hub revision (branch, tag, commit)")] = None,
    name: Annotated[str | None, typer.Option(help="Model name (default: the folder name)")] = None,
    tenant: Annotated[str | None, typer.Option(help="Owner tenant id (default: admin)")] = None,
) -> None:
    """Copy a transformers model into the artifact store and register it as a version."""
    settings = Settings()
    url = settings.resolved_database_url
    try:
        require_current_schema(url)  # `mlaas migrate` is the one migrator
        version = _hub().import_model(
            source, database_url=url, storage=settings,
            tenant_id=_tenant(url, tenant), name=name, revision=revision,
        )
    except MlaasError as exc:
        console.print(f"[bold red]error:[/] {exc.message}")
        raise typer.Exit(1) from None
    console.print(f"Registered {version.model_name}@{version.version} ({version.id})")


@hub_app.command("export")
def hub_export(
    model: Annotated[str, typer.Argument(help="<name>@<version> (or @production)")],
    out_dir: Annotated[Path, typer.Argument(help="Folder to write into")],
    format: Annotated[str, typer.Option("--format", help="safetensors or onnx")] = "safetensors",
    tenant: Annotated[str | None, typer.Option(help="Owner tenant id (default: admin)")] = None,
) -> None:
    """Write a version as safetensors, or as ONNX checked against PyTorch on sample inputs."""
    from mlaas.model_store import resolve_version

    settings = Settings()
    url = settings.resolved_database_url
    try:
        version = resolve_version(url, _tenant(url, tenant), model)
        report = _hub().export_version(version, format, out_dir)
    except MlaasError as exc:
        console.print(f"[bold red]error:[/] {exc.message}")
        raise typer.Exit(1) from None
    console.print(f"Wrote {report.path}", highlight=False)
    if report.max_abs_diff is not None:
        console.print(f"max abs diff vs PyTorch: {report.max_abs_diff:.3e} "
                      f"on {report.samples} samples", highlight=False)


@hub_app.command("push")
def hub_push(
    model: Annotated[str, typer.Argument(help="<name>@<version> (or @production)")],
    repo_id: Annotated[str, typer.Argument(help="Hub repo, <user or org>/<name>")],
    endpoint: Annotated[
        str | None, typer.Option(help="Hub URL (default: HF_ENDPOINT, else huggingface.co)")
    ] = None,
    public: Annotated[bool, typer.Option(help="Create the repo public (default private)")] = False,
    tenant: Annotated[str | None, typer.Option(help="Owner tenant id (default: admin)")] = None,
) -> None:
    """Upload a version's safetensors export to a hub repo; the token comes from HF_TOKEN
    (or `hf auth login`), never from the command line."""
    import tempfile

    from mlaas.model_store import resolve_version

    settings = Settings()
    url = settings.resolved_database_url
    try:
        version = resolve_version(url, _tenant(url, tenant), model)
        with tempfile.TemporaryDirectory(prefix="mlaas-push-") as staging:
            _hub().export_version(version, "safetensors", Path(staging))
            commit_url = _hub().push_folder(
                Path(staging), repo_id, endpoint=endpoint, private=not public
            )
    except MlaasError as exc:
        console.print(f"[bold red]error:[/] {exc.message}")
        raise typer.Exit(1) from None
    console.print(f"Pushed {version.model_name}@{version.version} to {commit_url}",
                  highlight=False)
