"""``mlaas audit``: the audit log of key and tenant actions, read on the platform's host."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from mlaas import accounts, audit
from mlaas.db import require_current_schema
from mlaas.errors import MlaasError
from mlaas.settings import Settings

console = Console()
err = Console(stderr=True)


def _fail(message: str) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def audit_command(
    tenant: Annotated[str | None, typer.Option(
        help="Tenant id or name: the actions it did or that concern it")] = None,
    action: Annotated[str | None, typer.Option(
        help=f"Only this action: {', '.join(audit.ACTIONS)}")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, 1 to 1000")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines")] = False,
) -> None:
    """Administrative and key actions, newest first: who, what, when, request id, outcome."""
    try:
        url = Settings().resolved_database_url
        require_current_schema(url)  # reads only: `mlaas migrate` is the one migrator
        tenant_id = accounts.find_tenant(url, tenant).id if tenant else None
        events = audit.list_events(url, tenant_id=tenant_id, action=action, limit=limit)
    except (MlaasError, ValueError) as exc:
        _fail(getattr(exc, "message", None) or str(exc))
    if as_json:
        for event in events:
            print(json.dumps(asdict(event)))
        return
    table = Table("when", "tenant", "key", "via", "action", "target", "outcome", "status",
                  "request id", "detail")
    for e in events:
        outcome = "[green]ok[/]" if e.outcome == "ok" else f"[red]{e.outcome}[/]"
        table.add_row(e.at, e.actor_tenant_id or "-", e.actor_key_id or "-", e.credential,
                      e.action, e.target or "", outcome, str(e.status), e.request_id or "",
                      e.detail or "")
    console.print(table)
