"""``mlaas federated join``: run a data owner's node with a live display of its state;
``nodes``, ``approve``, ``owner-key`` and ``roster``: the pool owner's view of who takes part.

The pool's owner key (Ed25519) signs every roster entry. It stays on the owner's machine, in
``$XDG_CONFIG_HOME/mlaas/pool-owners/<pool id>.json`` (``~/.config`` by default; mode 0600)
or the file ``--owner-key-file`` names; only its public key goes to the server.

The node is in ``federated.node``, imported inside the command, because the ``mlaas``
package depends on no other package of the repo."""

from __future__ import annotations

import importlib
import json
import os
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


OwnerKeyFile = Annotated[Path | None, typer.Option(
    help="the pool's owner key file (default: ~/.config/mlaas/pool-owners/<pool id>.json)")]


def _fail(message: str) -> typer.Exit:
    console.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(2)


def _pool_id(pool: str) -> str:
    try:
        return str(importlib.import_module("federated.node").split_pool_url(pool)[1])
    except MlaasError as exc:
        raise _fail(exc.message) from None


def _owner_call(pool: str, api_key: str, method: str, path: str,
                body: dict[str, Any] | None = None) -> dict[str, Any]:
    """One request to the pool's routes; an error in the documented shape exits 2."""
    import httpx

    node_module = importlib.import_module("federated.node")
    base, pool_id = node_module.split_pool_url(pool)
    url = f"{base}/v1/federated/pools/{pool_id}{path}"
    try:
        response = httpx.request(method, url, headers={"Authorization": f"Bearer {api_key}"},
                                 json=body, timeout=60)
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


def owner_key_path(pool_id: str, given: Path | None = None) -> Path:
    """Where the owner key of ``pool_id`` is kept on this machine."""
    if given is not None:
        return given.expanduser()
    config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return config / "mlaas" / "pool-owners" / f"{pool_id}.json"


def _load_owner(path: Path, pool_id: str) -> Any:
    """The owner's ``Identity`` from its key file; exits 2 when it is missing or another's."""
    keys = importlib.import_module("federated._keys")
    messages = importlib.import_module("federated._messages")
    if not path.exists():
        raise _fail(f"no owner key file at {path}; run `mlaas federated owner-key` (once per "
                    "pool) or name the file with --owner-key-file")
    saved = json.loads(path.read_text())
    if saved.get("pool_id") != pool_id:
        raise _fail(f"{path} is the owner key of pool {saved.get('pool_id')}, not {pool_id}")
    return keys.Identity.from_private_bytes(messages.unb64(saved["private_key"]))


def _checked_roster(pool: str, api_key: str) -> tuple[dict[str, Any], str]:
    """The pool's roster (``GET …/roster``) and its head, once the chain and the owner's
    signatures check; exits 2 otherwise."""
    answer = _owner_call(pool, api_key, "GET", "/roster")
    roster_module = importlib.import_module("federated._roster")
    try:
        head = roster_module.check_chain(answer["pool_id"], answer["entries"],
                                         answer.get("owner_key"))
    except MlaasError as exc:
        raise _fail(exc.message) from None
    return answer, str(head)


@federated_app.command("owner-key")
def set_owner_key(pool: PoolUrl, api_key: OwnerKey, owner_key_file: OwnerKeyFile = None,
                  ) -> None:
    """Make the pool's owner key (kept here, 0600) and register its public key with the
    pool, once, signing the roster so far; from then on only entries you sign join it."""
    keys = importlib.import_module("federated._keys")
    messages = importlib.import_module("federated._messages")
    roster_module = importlib.import_module("federated._roster")
    from mlaas.settings import write_private_file

    pool_id = _pool_id(pool)
    path = owner_key_path(pool_id, owner_key_file)
    if path.exists():
        owner = _load_owner(path, pool_id)
    else:
        owner = keys.Identity()
        write_private_file(path, json.dumps({
            "pool_id": pool_id, "owner_key": messages.b64(owner.public_bytes),
            "private_key": messages.b64(owner.private_bytes)}))
    public = messages.b64(owner.public_bytes)
    roster, _ = _checked_roster(pool, api_key)
    if roster.get("owner_key") == public:
        console.print(f"pool {pool_id} has this owner key already", highlight=False)
    else:
        signatures = {str(e["seq"]): roster_module.sign_entry(owner, e)
                      for e in roster["entries"]}
        _owner_call(pool, api_key, "PUT", "/owner-key",
                    {"owner_key": public, "signatures": signatures})
        console.print(f"[green]✔[/] pool {pool_id} now takes only roster entries signed by "
                      f"the key in {path} ({len(signatures)} signed now)", highlight=False)
    console.print(f"owner key fingerprint {roster_module.owner_fingerprint(public)}",
                  highlight=False, soft_wrap=True)


def _approve_one(pool: str, api_key: str, node: dict[str, Any], owner: Any) -> dict[str, Any]:
    """Approve ``node``; in a pool with an owner key, sign the entry it appends here."""
    if owner is None:
        return _owner_call(pool, api_key, "POST", f"/nodes/{node['node_id']}/approve")
    roster_module = importlib.import_module("federated._roster")
    roster, head = _checked_roster(pool, api_key)
    entry = roster_module.new_entry(roster["pool_id"], len(roster["entries"]), node["node_id"],
                                    node["identity_key"], head)
    return _owner_call(pool, api_key, "POST", f"/nodes/{node['node_id']}/approve",
                       {"owner_signature": roster_module.sign_entry(owner, entry)})


@federated_app.command("approve")
def approve(
    pool: PoolUrl, api_key: OwnerKey,
    node: Annotated[str | None, typer.Option(help="the node id to approve")] = None,
    all_pending: Annotated[bool, typer.Option(help="approve every pending node")] = False,
    owner_key_file: OwnerKeyFile = None,
) -> None:
    """Approve a pending node (or all): it joins the roster and may be selected from the next
    round. In a pool with an owner key, each roster entry is signed here with that key."""
    if (node is None) == (not all_pending):
        raise _fail("name one node with --node, or give --all-pending")
    pool_id = _pool_id(pool)
    roster, _ = _checked_roster(pool, api_key)
    owner = None
    if roster.get("owner_key"):
        owner = _load_owner(owner_key_path(pool_id, owner_key_file), pool_id)
        public = importlib.import_module("federated._messages").b64(owner.public_bytes)
        if public != roster["owner_key"]:
            raise _fail(f"the pool's owner key is not the one in your key file: refusing to "
                        f"sign for it (pool: {roster['owner_key']}, file: {public})")
    listed = _owner_call(pool, api_key, "GET", "/nodes")["nodes"]
    chosen = [n for n in listed if not n["approved"]] if all_pending \
        else [n for n in listed if n["node_id"] == node]  # fmt: skip
    if node is not None and not chosen:
        raise _fail(f"node {node} has not joined pool {pool_id}")
    for one in chosen:
        answer = _approve_one(pool, api_key, one, owner)
        signed = f"signed identity key {one['identity_key']}; " if owner is not None else ""
        console.print(f"[green]✔[/] node {answer['node_id']} ({one['label'] or 'no label'}) "
                      f"approved; {signed}roster of {answer['roster_length']} entries, head "
                      f"{answer['roster_head']}", highlight=False, soft_wrap=True)
    if not chosen:
        console.print("no pending nodes")


@federated_app.command("roster")
def roster(pool: PoolUrl, api_key: Annotated[str, typer.Option(
        envvar="MLAAS_API_KEY", help="a key of the pool (the owner's or a participant's)")],
           as_json: Annotated[bool, typer.Option("--json", help="print the entries")] = False,
           ) -> None:
    """Check the pool's roster chain and print its head fingerprint, to compare out of band
    (owner and data owners read the same head when they see the same roster)."""
    answer, head = _checked_roster(pool, api_key)
    roster_module = importlib.import_module("federated._roster")
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
    owner = answer.get("owner_key")
    console.print(f"owner key fingerprint {roster_module.owner_fingerprint(owner)}" if owner
                  else "owner key: none (entries are not owner-signed; see `mlaas federated "
                  "owner-key`)", highlight=False, soft_wrap=True)
