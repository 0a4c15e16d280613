"""A pool's roster: the approved nodes' identity keys as an append-only, hash-chained log.

Each entry is ``{"seq", "pool_id", "node_id", "identity_key", "prev"}`` and its ``hash`` is the
SHA-256 of the entry's canonical JSON; ``prev`` is the hash of the entry before (64 zeros for
the first). The head hash is the roster's fingerprint: two parties holding the same head hold
the same roster. A node pins the roster it first sees and accepts later ones only when they
extend it, so nobody can swap or drop an identity once the node has seen it.

The chain is kept by the server and extended only when the pool's owner approves a node; its
entries are not signed by the owner, so the fingerprint is compared out of band
(``mlaas federated roster``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from federated._messages import canonical, unb64
from mlaas.errors import ValidationError

GENESIS = "0" * 64
ENTRY_FIELDS = ("seq", "pool_id", "node_id", "identity_key", "prev")


def entry_hash(entry: dict[str, Any]) -> str:
    """The SHA-256 (hex) of an entry's canonical JSON, without its own hash."""
    return hashlib.sha256(canonical({k: entry[k] for k in ENTRY_FIELDS})).hexdigest()


def new_entry(pool_id: str, seq: int, node_id: str, identity_key: str, prev: str) -> dict[str, Any]:
    """The next entry of a roster whose head is ``prev``."""
    entry: dict[str, Any] = {
        "seq": seq,
        "pool_id": pool_id,
        "node_id": node_id,
        "identity_key": identity_key,
        "prev": prev,
    }
    entry["hash"] = entry_hash(entry)
    return entry


def fingerprint(head: str) -> str:
    """The head hash in groups of four, for reading aloud or comparing by eye."""
    return " ".join(head[i : i + 4] for i in range(0, len(head), 4))


class RosterError(ValidationError):
    """A roster that is not a valid chain of this pool, or that does not extend the pinned one."""


def check_chain(pool_id: str, entries: list[dict[str, Any]]) -> str:
    """The head hash of a valid roster of ``pool_id``.

    Raises:
        RosterError: an entry is out of order, of another pool, or its hash or link is wrong.
    """
    head = GENESIS
    for seq, entry in enumerate(entries):
        if entry.get("seq") != seq or entry.get("pool_id") != pool_id:
            raise RosterError(f"roster entry {seq} is out of order or of another pool",
                              details={"reason": "roster_broken", "seq": seq})
        if entry.get("prev") != head or entry.get("hash") != entry_hash(entry):
            raise RosterError(f"roster entry {seq} does not chain to the one before",
                              details={"reason": "roster_broken", "seq": seq})
        head = str(entry["hash"])
    return head


def identity_keys(entries: list[dict[str, Any]]) -> frozenset[bytes]:
    """The raw Ed25519 identity keys on a roster."""
    return frozenset(unb64(str(e["identity_key"])) for e in entries)


@dataclass
class PinnedRoster:
    """The roster a node pinned, kept in its state folder (``roster.json``)."""

    path: Path
    pool_id: str
    entries: list[dict[str, Any]]

    @classmethod
    def load(cls, path: Path, pool_id: str) -> PinnedRoster:
        entries = json.loads(path.read_text())["entries"] if path.exists() else []
        return cls(path, pool_id, entries)

    def accept(self, entries: list[dict[str, Any]]) -> frozenset[bytes]:
        """Pin ``entries`` when they are a valid roster extending the pinned one.

        Returns:
            The identity keys of the (new) pinned roster.

        Raises:
            RosterError: the roster is broken, or rewrites or drops a pinned entry.
        """
        check_chain(self.pool_id, entries)
        if entries[: len(self.entries)] != self.entries:
            raise RosterError(
                f"the pool's roster no longer extends the one this node pinned "
                f"({len(self.entries)} entries, head {self.head[:16]}); the server may be "
                "substituting identities: compare `mlaas federated roster` with the owner",
                details={"reason": "roster_rewritten", "pinned_head": self.head})
        if len(entries) > len(self.entries) or not self.path.exists():
            from mlaas.settings import write_private_file

            self.entries = list(entries)
            write_private_file(self.path, json.dumps({"pool_id": self.pool_id,
                                                      "entries": self.entries}))
        return identity_keys(self.entries)

    @property
    def head(self) -> str:
        return str(self.entries[-1]["hash"]) if self.entries else GENESIS
