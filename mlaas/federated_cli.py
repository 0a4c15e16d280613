"""``mlaas federated join``: run a data owner's node with a live display of its state.

The node is in ``federated.node``, imported inside the command, because the ``mlaas``
package depends on no other package of the repo."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from mlaas.errors import MlaasError

federated_app = typer.Typer(help="Federated pools: join one as a data owner's node.")
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
