"""``mlaas federated join``: run a data owner's node with a live display of its state;
``nodes``, ``approve`` and ``roster``: the pool owner's view of who takes part.

The node is in ``federated.node``, imported inside the command, because the ``mlaas``
package depends on no other package of the repo."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from mlaas.errors import MlaasError

federated_app = typer.Typer(help="Federated pools: join one as a data owner's node; approve "
                            "nodes and print the roster as the pool's owner.")
console = Console()


def _status_table(status: Any) -> Table:
    table = Table(title="federated node", show_header=False, min_width=50)
    spent = f"{status.epsilon_spent:.3f} of {status.epsilon_budget:g}"
    for name, value in (("node", status.node_id), ("state", status.state),
                        ("round", status.round), ("stage", status.stage),
                        ("rounds completed", status.rounds_done),
                        ("samples", status.samples), ("epsilon spent", spent),
                        ("last message", status.message)):
        table.add_row(name, "" if value is None else str(value))
    return table


@federated_app.command("join")
def join(
    pool: Annotated[str, typer.Option(help="http://HOST:PORT/v1/federated/pools/<pool id>")],
    api_key: Annotated[str, typer.Option(help="an API key of the pool's tenant")],
    data: Annotated[str, typer.Option(help="CSV or Parquet file, or builtin:digits|iris|...")],
    epsilon: Annotated[float | None, typer.Option(help="your own epsilon budget")] = None,
    target: Annotated[str, typer.Option(help="label column of a CSV/Parquet file")] = "target",
    label: Annotated[str, typer.Option(help="a name for this node in the pool")] = "",
    state_dir: Annotated[Path | None, typer.Option(help="identity and privacy state")] = None,
    dump_dir: Annotated[Path | None, typer.Option(hidden=True)] = None,
    hold_before: Annotated[str | None, typer.Option(hidden=True)] = None,
) -> None:
    """Join a pool and take part in its rounds until it ends or your budget is spent."""
    node_module = importlib.import_module("federated")
    options = node_module.NodeOptions(pool, api_key, data, target, epsilon, state_dir, label,
                                      dump_dir=dump_dir, hold_before=hold_before)
    plain = not console.is_terminal
    last: dict[str, Any] = {}
    with Live(console=console, refresh_per_second=4, transient=plain) as live:

        def show(status: Any) -> None:
            live.update(_status_table(status))
            line = {"state": status.state, "round": status.round, "stage": status.stage,
                    "epsilon": status.epsilon_spent}
            if plain and line != last:  # a log line per change when not on a terminal
                last.clear()
                last.update(line)
                live.console.print(line, soft_wrap=True)

        try:
            outcome = node_module.Node(options, on_status=show).run()
        except MlaasError as exc:
            console.print(f"[bold red]error:[/] {exc.message}")
            raise typer.Exit(2) from None
    console.print(f"node stopped: {outcome}")


PoolUrl = Annotated[str, typer.Option(help="http://HOST:PORT/v1/federated/pools/<pool id>")]
OwnerKey = Annotated[str, typer.Option(envvar="MLAAS_API_KEY",
                                       help="a tenant key of the pool's owner")]


def _owner_call(pool: str, api_key: str, method: str, path: str) -> dict[str, Any]:
    """One request to the pool's routes; an error in the documented shape exits 2."""
    import httpx

    node_module = importlib.import_module("federated.node")
    base, pool_id = node_module.split_pool_url(pool)
    url = f"{base}/v1/federated/pools/{pool_id}{path}"
    try:
        response = httpx.request(method, url, headers={"Authorization": f"Bearer {api_key}"},
                                 timeout=60)
    except httpx.TransportError as exc:
        console.print(f"[bold red]error:[/] {url} is unreachable: {exc}")
        raise typer.Exit(2) from None
    if response.status_code >= 400:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError):
            message = response.text[:200]
        console.print(f"[bold red]error:[/] {response.status_code} {message}")
        raise typer.Exit(2)
    return response.json()  # type: ignore[no-any-return]


@federated_app.command("nodes")
def nodes(pool: PoolUrl, api_key: OwnerKey) -> None:
    """List the pool's nodes: pending ones wait for `mlaas federated approve`."""
    answer = _owner_call(pool, api_key, "GET", "/nodes")
    table = Table("node", "label", "status", "approved", "joined")
    for node in answer["nodes"]:
        table.add_row(node["node_id"], node["label"], node["status"],
                      "yes" if node["approved"] else "no", node["joined_at"])
    console.print(table)


@federated_app.command("approve")
def approve(pool: PoolUrl, node: Annotated[str, typer.Option(help="the node id to approve")],
            api_key: OwnerKey) -> None:
    """Approve a pending node: it joins the roster and may be selected from the next round."""
    answer = _owner_call(pool, api_key, "POST", f"/nodes/{node}/approve")
    console.print(f"[green]✔[/] node {answer['node_id']} approved; roster of "
                  f"{answer['roster_length']} entries, head {answer['roster_head']}")


@federated_app.command("roster")
def roster(pool: PoolUrl, api_key: Annotated[str, typer.Option(
        envvar="MLAAS_API_KEY", help="a key of the pool (the owner's or a participant's)")],
           as_json: Annotated[bool, typer.Option("--json", help="print the entries")] = False,
           ) -> None:
    """Check the pool's roster chain and print its head fingerprint, to compare out of band
    (owner and data owners read the same head when they see the same roster)."""
    answer = _owner_call(pool, api_key, "GET", "/roster")
    roster_module = importlib.import_module("federated._roster")
    try:
        head = roster_module.check_chain(answer["pool_id"], answer["entries"])
    except MlaasError as exc:
        console.print(f"[bold red]error:[/] {exc.message}")
        raise typer.Exit(2) from None
    if as_json:
        print(json.dumps(answer))
        return
    console.print(f"pool {answer['pool_id']}: {len(answer['entries'])} approved nodes")
    for entry in answer["entries"]:
        console.print(f"  {entry['seq']:>4}  {entry['node_id']}  {entry['identity_key']}",
                      highlight=False)
    console.print(f"head {head}", highlight=False, soft_wrap=True)
    console.print(f"fingerprint {roster_module.fingerprint(head)}", highlight=False,
                  soft_wrap=True)
