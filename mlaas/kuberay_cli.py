"""``mlaas kuberay render`` and ``mlaas bootstrap-admin``: the commands of a Kubernetes
deployment (configs/cluster/, docs/cluster.md, "Deploy on Kubernetes")."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console

from mlaas import accounts, kuberay
from mlaas.db import require_current_schema
from mlaas.errors import MlaasError
from mlaas.settings import Settings

kuberay_app = typer.Typer(help="KubeRay manifests (configs/cluster/).", no_args_is_help=True)
err = Console(stderr=True)
ADMIN_SECRET_KEY = "api-key"


def _say(message: str) -> None:
    err.print(message, highlight=False, soft_wrap=True)


def _fail(message: str) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


@kuberay_app.command("render")
def render(
    check: Annotated[bool, typer.Option(
        "--check", help="Only check that the manifest is current; exit 1 if not")] = False,
    serve_config: Annotated[Path, typer.Option(help="Serve config to render")] = (
        kuberay.SERVE_CONFIG),
    manifest: Annotated[Path, typer.Option(help="RayService manifest to rewrite")] = (
        kuberay.RAYSERVICE_MANIFEST),
) -> None:
    """Write the RayService's serveConfigV2, generated from the Serve config."""
    try:
        current = kuberay.render_manifest(serve_config, manifest, check=check)
    except (MlaasError, OSError) as exc:
        _fail(getattr(exc, "message", None) or str(exc))
    if current:
        _say(f"[green]✔[/] {manifest} is current with {serve_config}")
    elif check:
        _fail(f"{manifest} is stale: {serve_config} changed since it was rendered; run "
              "`mlaas kuberay render` and commit both")
    else:
        _say(f"[green]✔[/] Rendered {serve_config} into {manifest}")


def bootstrap_admin_command(
    secret: Annotated[str | None, typer.Option(
        help="Store the key in this Kubernetes Secret (key `api-key`) instead of printing it; "
        "run in a pod whose service account may get and create Secrets")] = None,
) -> None:
    """Create the admin tenant and its key once (as `mlaas up` does) on a migrated database.

    Prints the key on stdout (and nothing else) when it is new; with --secret, writes it to a
    Secret that must not exist yet. Runs again harmlessly once the admin exists.
    """
    from mlaas import platform

    try:
        settings = Settings()
        url = settings.resolved_database_url
        require_current_schema(url)  # `mlaas migrate` is the one migrator
        api = kuberay.KubernetesApi.in_cluster(dict(os.environ)) if secret else None
        if not _admin_needed(url, api, secret):
            return
        settings.ensure_home()
        key = platform.bootstrap_admin(settings)
    except (MlaasError, ValueError) as exc:
        _fail(getattr(exc, "message", None) or str(exc))
    if key is None:  # another run created the admin since the check above
        _fail("the admin tenant was created concurrently by another run; use its key")
    if api is None or secret is None:
        print(key, flush=True)
    else:
        _store_admin_key(api, secret, key)


def _admin_needed(url: str, api: kuberay.KubernetesApi | None, secret: str | None) -> bool:
    """Whether to create the admin; fails when the database and the Secret disagree."""
    stored = api is not None and secret is not None and api.secret_exists(secret)
    if accounts.admin_tenant(url) is not None:
        if api is None or stored:
            err.print(f"Nothing to do: the admin tenant exists"
                      f"{f' and its key is in Secret {secret}' if stored else ''}.")
            return False
        _fail(f"the admin tenant exists but Secret {secret} does not, and its key was shown "
              "once: make a new one with `mlaas keys create --tenant admin --scope admin "
              f"--scope tenant` and store it in {secret} yourself")
    if stored:
        _fail(f"Secret {secret} exists but this database has no admin (a key of another "
              f"database?): delete it (`kubectl delete secret {secret}`) and run again")
    return True


def _store_admin_key(api: kuberay.KubernetesApi, secret: str, key: str) -> None:
    try:
        api.create_secret(secret, {ADMIN_SECRET_KEY: key}, {"app.kubernetes.io/name": "mlaas"})
    except MlaasError as exc:
        _fail(f"{exc.message}. The admin key was made but not stored, and is not shown: "
              "revoke it (`mlaas keys list --tenant admin`, `mlaas keys revoke ID`), create "
              "another with `mlaas keys create --tenant admin --scope admin --scope tenant`, "
              "and store that")
    err.print(f"[green]✔[/] Admin key stored in Secret {secret} (key {ADMIN_SECRET_KEY})",
              highlight=False, soft_wrap=True)
