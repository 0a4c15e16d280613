"""A pool's roster: the approved nodes' identity keys as an append-only, hash-chained log.

Each entry is ``{"seq", "pool_id", "node_id", "identity_key", "prev"}`` and its ``hash`` is the
SHA-256 of the entry's canonical JSON; ``prev`` is the hash of the entry before (64 zeros for
the first). The head hash is the roster's fingerprint: two parties holding the same head hold
the same roster. A node pins the roster it first sees and accepts later ones only when they
extend it, so nobody can swap or drop an identity once the node has seen it.

The chain is kept by the server and extended only when the pool's owner approves a node. In a
pool with an owner key (Ed25519, kept by the owner's CLI and never sent to the server), every
entry also carries ``owner_signature``: the owner's signature of ``b"mlaas-roster/v1|"`` +
the entry's hash (hex). Nodes pin the owner key with the roster and refuse an entry without a
valid signature, so a server that also holds the database cannot add identities of its own.
The signature is not part of the hash, so a roster signed after the fact (``mlaas federated
owner-key``) keeps its head. The head fingerprint, and the owner key's, are compared out of
band (``mlaas federated roster``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from federated._keys import Identity, verify_signature
from federated._messages import b64, canonical, unb64
from mlaas.errors import ValidationError

GENESIS = "0" * 64
ENTRY_FIELDS = ("seq", "pool_id", "node_id", "identity_key", "prev")
OWNER_SIGNATURE_DOMAIN = b"mlaas-roster/v1|"


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


def owner_fingerprint(owner_key: str) -> str:
    """The SHA-256 of the raw owner public key (base64 ``owner_key``), in groups of four."""
    return fingerprint(hashlib.sha256(unb64(owner_key)).hexdigest())


def owner_signed_message(hash_hex: str) -> bytes:
    """What the owner signs for one entry: the domain, then the entry's hash in hex."""
    return OWNER_SIGNATURE_DOMAIN + hash_hex.encode("ascii")


def sign_entry(owner: Identity, entry: dict[str, Any]) -> str:
    """The owner's signature (base64) of an entry, over the hash of its fields."""
    return b64(owner.sign(owner_signed_message(entry_hash(entry))))


def owner_signature_valid(owner_key: str, entry: dict[str, Any]) -> bool:
    """Whether ``entry`` carries the signature of ``owner_key`` over its own hash."""
    signature = entry.get("owner_signature")
    if not isinstance(signature, str) or not signature:
        return False
    try:
        raw_key, raw_signature = unb64(owner_key), unb64(signature)
    except ValueError:
        return False
    return verify_signature(raw_key, raw_signature, owner_signed_message(entry_hash(entry)))


class RosterError(ValidationError):
    """A roster that is not a valid chain of this pool, that lacks the owner's signatures, or
    that does not extend the pinned one."""


def check_chain(pool_id: str, entries: list[dict[str, Any]],
                owner_key: str | None = None) -> str:
    """The head hash of a valid roster of ``pool_id``.

    Args:
        owner_key: the pool's owner public key (base64); when given, every entry must carry
            its valid ``owner_signature``.

    Raises:
        RosterError: an entry is out of order, of another pool, its hash or link is wrong, or
            it is not signed by ``owner_key``.
    """
    head = GENESIS
    for seq, entry in enumerate(entries):
        if entry.get("seq") != seq or entry.get("pool_id") != pool_id:
            raise RosterError(f"roster entry {seq} is out of order or of another pool",
                              details={"reason": "roster_broken", "seq": seq})
        if entry.get("prev") != head or entry.get("hash") != entry_hash(entry):
            raise RosterError(f"roster entry {seq} does not chain to the one before",
                              details={"reason": "roster_broken", "seq": seq})
        if owner_key is not None and not owner_signature_valid(owner_key, entry):
            raise RosterError(
                f"roster entry {seq} (node {entry.get('node_id')}) is not signed by the pool's "
                f"owner key ({owner_fingerprint(owner_key)[:19]}); the server may be adding "
                "identities of its own: refuse the pool and tell its owner",
                details={"reason": "roster_unsigned", "seq": seq,
                         "node_id": entry.get("node_id")})
        head = str(entry["hash"])
    return head


def identity_keys(entries: list[dict[str, Any]]) -> frozenset[bytes]:
    """The raw Ed25519 identity keys on a roster."""
    return frozenset(unb64(str(e["identity_key"])) for e in entries)


@dataclass
class PinnedRoster:
    """The roster a node pinned, with the pool's owner key, kept in its state folder
    (``roster.json``)."""

    path: Path
    pool_id: str
    entries: list[dict[str, Any]]
    owner_key: str | None = None

    @classmethod
    def load(cls, path: Path, pool_id: str) -> PinnedRoster:
        saved = json.loads(path.read_text()) if path.exists() else {}
        return cls(path, pool_id, saved.get("entries", []), saved.get("owner_key"))

    def check_owner_key(self, owner_key: str | None) -> None:
        """Refuse a pool description or roster whose owner key is not the pinned one.

        A node that pinned no owner key (the pool had none yet) accepts one once: it trusted
        the server's roster until then, and from now on every entry must be signed by it.

        Raises:
            RosterError: the pinned owner key is replaced or dropped.
        """
        if self.owner_key is None or owner_key == self.owner_key:
            return
        offered = owner_fingerprint(owner_key)[:19] if owner_key else "none"
        raise RosterError(
            f"the pool's owner key changed from the one this node pinned "
            f"({owner_fingerprint(self.owner_key)[:19]}, now {offered}); the server may be "
            "signing the roster itself: refuse the pool and tell its owner",
            details={"reason": "owner_key_changed", "pinned_owner_key": self.owner_key})

    def accept(self, entries: list[dict[str, Any]],
               owner_key: str | None = None) -> frozenset[bytes]:
        """Pin ``entries`` when they are a valid roster extending the pinned one, each entry
        signed by the pool's owner key when the pool has one (or the node pinned one).

        Returns:
            The identity keys of the (new) pinned roster.

        Raises:
            RosterError: the roster is broken, lacks an owner signature, rewrites or drops a
                pinned entry, or comes with another owner key than the pinned one.
        """
        self.check_owner_key(owner_key)
        key = owner_key or self.owner_key
        check_chain(self.pool_id, entries, key)
        # the hashes cover every field but the signature, which may come after the entry
        pinned = [e["hash"] for e in self.entries]
        if [e["hash"] for e in entries[: len(pinned)]] != pinned:
            raise RosterError(
                f"the pool's roster no longer extends the one this node pinned "
                f"({len(self.entries)} entries, head {self.head[:16]}); the server may be "
                "substituting identities: compare `mlaas federated roster` with the owner",
                details={"reason": "roster_rewritten", "pinned_head": self.head})
        if len(entries) > len(self.entries) or key != self.owner_key \
                or not self.path.exists():  # fmt: skip
            from mlaas.settings import write_private_file

            self.entries, self.owner_key = list(entries), key
            saved: dict[str, Any] = {"pool_id": self.pool_id, "entries": self.entries}
            if key is not None:
                saved["owner_key"] = key
            write_private_file(self.path, json.dumps(saved))
        return identity_keys(self.entries)

    @property
    def head(self) -> str:
        return str(self.entries[-1]["hash"]) if self.entries else GENESIS
