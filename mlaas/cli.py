"""The ``mlaas`` command: start, stop and inspect the platform; manage tenants and keys."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, NoReturn

import httpx
import typer
from rich.console import Console
from rich.table import Table

from mlaas import accounts
from mlaas.audit_cli import audit_command
from mlaas.cluster_mode import (
    CHECKS,
    HEAD_CHECKS,
    alive_ray_nodes,
    is_loopback,
    require_cluster_ready,
)
from mlaas.db import migrate
from mlaas.errors import MlaasError
from mlaas.federated_cli import federated_app
from mlaas.hub_cli import hub_app
from mlaas.knowledge_cli import knowledge_app
from mlaas.kuberay_cli import bootstrap_admin_command, kuberay_app
from mlaas.settings import Settings
from mlaas.tiers import load_tiers

app = typer.Typer(help="ML-as-a-Service on Ray.", no_args_is_help=True, add_completion=False)
tenants_app = typer.Typer(help="Tenants (operator commands, run on the platform's host).")
keys_app = typer.Typer(help="API keys (operator commands, run on the platform's host).")
app.add_typer(tenants_app, name="tenants")
app.add_typer(keys_app, name="keys")
app.add_typer(hub_app, name="hub")
app.add_typer(federated_app, name="federated")
app.add_typer(knowledge_app, name="knowledge")
app.add_typer(kuberay_app, name="kuberay")
app.command("bootstrap-admin")(bootstrap_admin_command)
app.command("audit")(audit_command)
console = Console()
err = Console(stderr=True)


def _fail(message: str) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(1)


def _settings() -> Settings:
    try:
        settings = Settings()
        settings.ensure_home()
        return settings
    except (MlaasError, ValueError) as exc:
        _fail(str(exc))
        raise  # unreachable


def _migrated(settings: Settings) -> str:
    """The database URL, its schema brought to this code's migrations (what `mlaas migrate`
    and `mlaas up` do; one migrator at a time, under the database's migration lock)."""
    url = settings.resolved_database_url
    migrate(url)
    return url


@app.command("migrate")
def migrate_command() -> None:
    """Bring the database schema to this code's migrations, and print its revisions.

    The one migrator (`mlaas up` runs it too): training jobs and `hub import` only check the
    revision and refuse to work on a database that is not at it.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from mlaas.db import current_revisions

    settings = _settings()
    shown = make_url(settings.resolved_database_url).render_as_string(hide_password=True)
    try:
        with console.status(f"[bold]Migrating {shown}..."):
            revisions = current_revisions(_migrated(settings))
    except (MlaasError, SQLAlchemyError) as exc:
        _fail(f"could not migrate {shown}: {getattr(exc, 'message', None) or exc}")
    console.print(f"[green]✔[/] {shown} is at revision(s) {', '.join(revisions)}",
                  highlight=False, soft_wrap=True)


def _apply_flags(**variables: str | None) -> None:
    """Flags of a command as the MLAAS_* variables they stand for, so that the Ray processes
    it starts (whose environment their workers inherit) read the same settings."""
    for name, value in variables.items():
        if value is not None:
            os.environ[f"MLAAS_{name.upper()}"] = value


def _up_checks(owns_head: bool) -> tuple[str, ...]:
    return (*CHECKS, *HEAD_CHECKS) if owns_head else tuple(CHECKS)


@app.command()
def up(
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for the platform to be healthy")
    ] = 300,
    node_ip_address: Annotated[str | None, typer.Option(
        help="This node's address that other machines reach (MLAAS_NODE_IP_ADDRESS)")] = None,
    host: Annotated[str | None, typer.Option(
        help="Where the HTTP proxy listens, e.g. 0.0.0.0 (MLAAS_HOST)")] = None,
    dashboard_host: Annotated[str | None, typer.Option(
        help="Where the dashboard and job server listen (MLAAS_DASHBOARD_HOST)")] = None,
) -> None:
    """Start Ray (or use RAY_ADDRESS), migrate the database, deploy the Serve apps."""
    from mlaas import discovery, platform
    from mlaas.placement import platform_actor_options, require_offered

    _apply_flags(node_ip_address=node_ip_address, host=host, dashboard_host=dashboard_host)
    settings = _settings()
    address = os.environ.get("RAY_ADDRESS")
    try:
        # Forced cluster mode refuses before anything is made (a JWT secret, a database, Ray).
        require_cluster_ready(settings, alive_nodes=1, checks=_up_checks(not address))
        load_tiers(settings.tiers_file)
        settings.jwt_signing_secret()  # a weak MLAAS_JWT_SECRET stops here, not in a replica
        state = platform.PlatformState.load(settings)
        started_ray = False
        with console.status("[bold]Checking the port and the database...") as status:
            # A taken port is fine only when it is this platform's own Serve proxy.
            ours = state is not None and platform.ray_reachable(state.ray_address)
            _check_proxy_port(settings, address, ours=ours)
            _migrated(settings)
            if not address:
                if state and state.started_ray and platform.ray_reachable(state.ray_address):
                    address, started_ray = state.ray_address, True
                else:
                    status.update("[bold]Starting a Ray head...")
                    address = platform.start_ray_head(settings)
                    started_ray = True
                    # Saved now: `mlaas down` can then stop this head even if a later step fails.
                    platform.PlatformState(address, True, settings.url).save(settings)
            elif state is not None and state.ray_address == address:
                started_ray = state.started_ray
            assert address is not None  # given, found, or just started
            status.update(f"[bold]Connecting to Ray at {address}...")
            platform.connect_ray(address)
            require_cluster_ready(
                settings, alive_nodes=alive_ray_nodes(), checks=_up_checks(started_ray)
            )
            import ray

            require_offered(settings, ray.cluster_resources())
            # The head's proxy as clients reach it, on a cluster `mlaas up` did not start too.
            url = discovery.published_url(settings, discovery.head_node_ip())
            platform.PlatformState(
                address, started_ray, url, platform.current_session_name()
            ).save(settings)
            status.update("[bold]Deploying the Serve applications...")
            # On a cluster of other machines, this machine's paths mean nothing to replicas.
            local = started_ray or platform.is_on_this_machine(address)
            names = platform.deploy(settings, machine_paths=local)
            discovery.publish({"url": url, "ray_address": address},
                              platform_actor_options(settings))

            def tick(last: str) -> None:
                apps = ", ".join(f"{k}={v}" for k, v in platform.application_statuses().items())
                status.update(
                    f"[bold]Waiting for {', '.join(names)} to be healthy[/] ({apps or last})"
                )

            platform.wait_until_healthy(settings, timeout, tick, url=url)
            # Made only once the platform is healthy, so that the one printing is not lost.
            admin_key = platform.bootstrap_admin(settings)
    except MlaasError as exc:
        _fail(exc.message)
    _print_up(settings, url, address, admin_key, started_ray=started_ray)


def _check_proxy_port(settings: Settings, address: str | None, *, ours: bool) -> None:
    """Refuse a host that is not this machine's, or a taken HTTP port, when the proxy will
    listen here (no RAY_ADDRESS, or one on loopback) and is not already ``ours``."""
    from mlaas import platform

    if address and not platform.is_on_this_machine(address):
        return  # the proxy runs on the cluster's head, not here
    problem = platform.address_problem(settings.host, "MLAAS_HOST")
    if problem:
        _fail(problem)
    if not ours and not platform.port_is_free(settings.host, settings.port):
        _fail(
            f"Port {settings.port} on {settings.host} is taken by another program. "
            "Stop it, or choose another port with MLAAS_PORT=<port>."
        )


def _print_up(settings: Settings, url: str, address: str, admin_key: str | None, *,
              started_ray: bool) -> None:
    console.print(f"[green]✔[/] Platform is up at [bold]{url}[/]")
    console.print(f"  API docs: {url}/docs   Ray: {address}")
    if admin_key:
        console.print(
            "[bold yellow]Admin API key (shown once; also saved with mode 0600 to "
            f"{settings.home / 'admin_key'}):[/]"
        )
        console.print(admin_key, soft_wrap=True, highlight=False)
    else:
        console.print(f"  Admin key: in {settings.home / 'admin_key'}")
    if started_ray and not is_loopback(settings.node_ip_address):
        console.print(
            "  Add a node: copy ~/.ray/auth_token to it, export the same MLAAS_* settings, "
            f"then run `mlaas join --address {address}` there (docs/cluster.md, Add a node)",
            highlight=False, soft_wrap=True,
        )
    console.print(f"URL: {url}", highlight=False)


@app.command()
def down(
    keep_ray: Annotated[bool, typer.Option(help="Leave the Ray head running")] = False,
) -> None:
    """Flush usage, stop the Serve apps, and stop the Ray head that `mlaas up` started."""
    from mlaas import discovery, platform

    settings = _settings()
    state = platform.PlatformState.load(settings)
    address = os.environ.get("RAY_ADDRESS") or (state.ray_address if state else None)
    if address is None:
        console.print("Nothing to stop: no platform was started from this home dir.")
        return
    with console.status("[bold]Stopping the platform..."):
        stop_head = bool(state and state.started_ray and not keep_ray)
        if platform.ray_reachable(address):
            try:
                platform.connect_ray(address)
                discovery.withdraw()
                platform.flush_and_shutdown_serve(stop_serve=not stop_head)
            except MlaasError as exc:
                err.print(f"[yellow]warning:[/] {exc.message}")
        if state and stop_head:
            import ray

            ray.shutdown()
            port = int(state.ray_address.rsplit(":", 1)[1])
            platform.stop_ray_head(state.session_name, port)
        platform.PlatformState.path(settings).unlink(missing_ok=True)
    console.print("[green]✔[/] Platform stopped")


@app.command()
def status() -> None:
    """Show the cluster, the Serve applications and the URL (as the cluster publishes it)."""
    from mlaas import discovery, platform

    settings = _settings()
    state = platform.PlatformState.load(settings)
    address = os.environ.get("RAY_ADDRESS") or (state.ray_address if state else None)
    table = Table(show_header=False, box=None)
    if address is None or not platform.ray_reachable(address):
        table.add_row("URL", discovery.client_url(settings))
        table.add_row("Home", str(settings.home))
        table.add_row("Ray", "[red]not running[/] (start with `mlaas up`)")
        console.print(table)
        raise typer.Exit(1)
    platform.connect_ray(address)
    import ray

    url = settings.url if settings.public_url else (
        discovery.cluster_url(settings) or discovery.client_url(settings))
    table.add_row("URL", url)
    table.add_row("Home", str(settings.home))
    resources = ray.cluster_resources()
    table.add_row(
        "Ray", f"{address}  ({len(ray.nodes())} node(s), {resources.get('CPU', 0):g} CPU)"
    )
    for name, app_status in platform.application_statuses().items():
        colour = "green" if app_status == "RUNNING" else "yellow"
        table.add_row(f"app {name}", f"[{colour}]{app_status}[/]")
    try:
        health = httpx.get(url + "/health", timeout=5)
        table.add_row("Health", f"{health.status_code} {health.json().get('status')}")
    except (httpx.HTTPError, ValueError) as exc:
        table.add_row("Health", f"[red]unreachable[/] ({type(exc).__name__})")
    console.print(table)


@app.command()
def join(
    address: Annotated[str, typer.Option(
        help="The head's Ray address HOST:PORT, as `mlaas up` printed it")],
    token_file: Annotated[Path | None, typer.Option(
        help="The head's auth token (default RAY_AUTH_TOKEN, else ~/.ray/auth_token)")] = None,
    print_only: Annotated[bool, typer.Option(
        "--print", help="Print the `ray start` command instead of running it")] = False,
    block: Annotated[bool, typer.Option(
        help="Stay in the foreground as the node (a container's or service's main process); "
        "stopping it takes the node out")] = False,
) -> None:
    """Add this machine to the platform's Ray cluster as a worker node.

    Run it with the same MLAAS_* settings as the head (database, JWT secret, storage): the
    node's replicas and jobs read them from the environment its Ray starts with.
    MLAAS_NODE_IP_ADDRESS sets this node's address (default: the one Ray finds),
    MLAAS_NODE_RESOURCES its custom resources. Leave the cluster with `ray stop`.
    """
    from mlaas import node_join

    settings = _settings()
    try:
        if print_only:
            env = node_join.join_env(address, token_file)
            command = node_join.join_command(settings, address, block=block)
            print(node_join.shown_command(command, env))
            return
        if block:
            console.print(f"Joining the cluster at {address} in the foreground...")
            node_join.join_cluster(settings, address, token_file, block=True)
        with console.status(f"[bold]Joining the cluster at {address}..."):
            node_join.join_cluster(settings, address, token_file)
    except MlaasError as exc:
        _fail(exc.message)
    console.print(f"[green]✔[/] This machine is a node of the cluster at {address}; "
                  "`mlaas status` lists the nodes, `ray stop` leaves", highlight=False)


@tenants_app.command("create")
def tenants_create(
    name: str,
    tier: Annotated[str, typer.Option(help="free, pro or enterprise")] = "free",
) -> None:
    """Create a tenant and its first API key (shown once)."""
    settings = _settings()
    try:
        if tier not in load_tiers(settings.tiers_file).tiers:
            _fail(f"Unknown tier {tier!r}; see {settings.tiers_file}")
        url = _migrated(settings)
        tenant = accounts.create_tenant(url, name, tier=tier)
        _, key = accounts.create_key(url, tenant.id)
    except MlaasError as exc:
        _fail(exc.message)
    console.print(f"[green]✔[/] Tenant {tenant.name} ({tenant.id}, tier {tenant.tier})")
    console.print("API key (shown once):")
    console.print(key, soft_wrap=True, highlight=False)


@tenants_app.command("list")
def tenants_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines")] = False,
) -> None:
    """List tenants."""
    settings = _settings()
    tenants = accounts.list_tenants(_migrated(settings))
    if as_json:
        for t in tenants:
            print(json.dumps(asdict(t)))
        return
    table = Table("id", "name", "tier", "admin", "created")
    for t in tenants:
        table.add_row(t.id, t.name, t.tier, "yes" if t.is_admin else "", t.created_at)
    console.print(table)


@keys_app.command("create")
def keys_create(
    tenant: Annotated[
        str | None, typer.Option(help="Tenant id or name (default: the tenant of --pool)")
    ] = None,
    name: Annotated[str, typer.Option(help="A label for the key")] = "default",
    scope: Annotated[
        list[str] | None,
        typer.Option(help="admin, tenant, read-only (reads and predict), or federated (a node)"),
    ] = None,
    pool: Annotated[
        list[str] | None, typer.Option(help="scope federated: a pool id the key may join")
    ] = None,
    approve: Annotated[
        bool, typer.Option("--approve", help="scope federated: approve its node on registering")
    ] = False,
) -> None:
    """Create an API key (shown once); `--scope federated --pool P` makes a data owner's
    participant key, one node of pool P and nothing else of the tenant."""
    settings = _settings()
    try:
        url = _migrated(settings)
        pools = tuple(pool or ())
        if tenant is None and not pools:
            _fail("Pass --tenant (or --pool for a participant key)")
        tenant_info = accounts.find_tenant(url, tenant or accounts.pool_tenant(url, pools[0]))
        info, key = accounts.create_key(
            url, tenant_info.id, name=name, scopes=tuple(scope or ["tenant"]),
            pools=pools, approve_nodes=approve,
        )  # fmt: skip
    except MlaasError as exc:
        _fail(exc.message)
    named = f", pools {', '.join(info.pools)}" if info.pools else ""
    approved = ", its node approved on registering" if info.approves_nodes else ""
    console.print(
        f"[green]✔[/] Key {info.id} for {tenant_info.name} (scopes {', '.join(info.scopes)}"
        f"{named}{approved})"
    )
    console.print("API key (shown once):")
    console.print(key, soft_wrap=True, highlight=False)


@keys_app.command("list")
def keys_list(
    tenant: Annotated[str | None, typer.Option(help="Tenant id or name")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines")] = False,
) -> None:
    """List API keys (never the keys themselves)."""
    settings = _settings()
    try:
        url = _migrated(settings)
        tenant_id = accounts.find_tenant(url, tenant).id if tenant else None
    except MlaasError as exc:
        _fail(exc.message)
    keys = accounts.list_keys(url, tenant_id)
    if as_json:
        for k in keys:
            print(json.dumps(asdict(k)))
        return
    table = Table("id", "tenant", "name", "prefix", "scopes", "created", "revoked")
    for k in keys:
        table.add_row(
            k.id,
            k.tenant_id,
            k.name,
            k.prefix,
            ",".join(k.scopes),
            k.created_at,
            "yes" if k.revoked else "",
        )
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: str) -> None:
    """Revoke an API key; it and its tokens stop working at once."""
    settings = _settings()
    from mlaas import platform

    try:
        info = accounts.revoke_key(_migrated(settings), key_id)
        # Replicas cache verified keys for a few seconds; tell them now.
        platform.notify_credentials_changed(settings)
    except MlaasError as exc:
        _fail(exc.message)
    console.print(f"[green]✔[/] Key {info.id} revoked")


@app.command()
def train(
    config: Annotated[Path, typer.Argument(help="Job spec, e.g. configs/train/wine-keras.yaml")],
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a field: --set epochs=3")
    ] = None,
    api_key: Annotated[
        str | None, typer.Option(envvar="MLAAS_API_KEY", help="Default: the admin key file")
    ] = None,
    idempotency_key: Annotated[str | None, typer.Option(help="Retry-safe submission key")] = None,
    detach: Annotated[bool, typer.Option(help="Submit and return without following")] = False,
) -> None:
    """Submit a training job to the platform (POST /v1/train) and show its progress live."""
    from mlaas import train_client
    from mlaas.discovery import client_url

    settings = _settings()
    key = api_key or _admin_key(settings)
    try:
        spec = train_client.read_spec(config, set_ or [])
        url = client_url(settings)
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"},
                          timeout=60) as client:
            accepted = train_client.submit(client, spec, idempotency_key)
            console.print(f"Submitted {accepted['training_job_id']} ({accepted['status']}); "
                          f"status at {url}{accepted['monitoring_url']}", highlight=False)
            if detach:
                return
            final = train_client.follow(client, accepted["training_job_id"], console)
    except (MlaasError, httpx.HTTPError) as exc:
        _fail(getattr(exc, "message", None) or str(exc))
    if final["status"] != "SUCCEEDED":
        _fail(f"job {final['status']}: {final.get('error_message') or 'no message'}")
    version = final.get("model_version") or {}
    console.print(f"[green]✔[/] Registered {version.get('model_name')} version "
                  f"{version.get('version')} ({version.get('id')})", highlight=False)


def _admin_key(settings: Settings) -> str:
    path = settings.home / "admin_key"
    if not path.exists():
        _fail(f"No API key: pass --api-key or MLAAS_API_KEY (no admin key in {path})")
    return path.read_text().strip()


def main() -> None:
    app(prog_name="mlaas")


if __name__ == "__main__":
    main()
