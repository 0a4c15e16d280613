"""The federated pool: secure aggregation (SecAgg / SecAgg+), pools and rounds, DP nodes.

Public names only; the machinery lives in the underscore modules. The names that need Ray
or torch (coordinator, pools, node) are imported on first use, so the protocol itself
stays light.
"""

from importlib import import_module
from typing import Any

from federated._clear import ClearRoundServer, clear_input_message
from federated._client import RoundClient
from federated._graph import neighbours, share_holders
from federated._inprocess import InProcessRound
from federated._keys import Identity, KeyPair
from federated._masking import decode_vector, encode_vector, expand_mask
from federated._messages import BinaryMessage
from federated._packing import pack_residues, packed_size, unpack_residues
from federated._quantize import dequantize_mean, max_aggregate, quantize, weighted_input
from federated._requests import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    check_message_sender,
    check_signed,
    poll_params,
    signed_headers,
)
from federated._server import LocalVectorSum, RoundConfig, RoundServer, VectorSum
from federated._spec import PoolSpec, parse_pool_spec, security_problem
from federated.errors import (
    BadSignatureError,
    ClearUpdateRefusedError,
    DuplicateMessageError,
    MalformedMessageError,
    NotSelectedError,
    PoolSpecError,
    ProtocolError,
    RoundAbortedError,
    StaleMessageError,
    UnsafeRequestError,
)

_LAZY = {
    "coordinator_for": "federated._actor",
    "PoolCoordinator": "federated._coordinator",
    "create_pool": "federated._pools",
    "get_pool": "federated._store",
    "list_pools": "federated._store",
    "rounds_of": "federated._store",
    "contributors": "federated._scoring",
    "leave_one_out": "federated._leave_one_out",
    "read_version_weights": "federated._model",
    "Node": "federated.node",
    "NodeOptions": "federated.node",
    "approve_node": "federated._store",
    "get_node": "federated._store",
    "list_nodes": "federated._store",
    "node_identity": "federated._store",
    "roster_of": "federated._store",
    "set_owner_key": "federated._store",
}
_ALIASES = {  # public name -> (module, name there)
    "ROSTER_GENESIS": ("federated._roster", "GENESIS"),
    "roster_fingerprint": ("federated._roster", "fingerprint"),
    "roster_owner_fingerprint": ("federated._roster", "owner_fingerprint"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    if name in _ALIASES:
        module, attribute = _ALIASES[name]
        return getattr(import_module(module), attribute)
    raise AttributeError(f"module 'federated' has no attribute {name!r}")


__all__ = [
    *_LAZY,
    *_ALIASES,
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "check_message_sender",
    "check_signed",
    "poll_params",
    "signed_headers",
    "BadSignatureError",
    "BinaryMessage",
    "ClearRoundServer",
    "ClearUpdateRefusedError",
    "DuplicateMessageError",
    "Identity",
    "InProcessRound",
    "KeyPair",
    "LocalVectorSum",
    "MalformedMessageError",
    "NotSelectedError",
    "PoolSpec",
    "PoolSpecError",
    "ProtocolError",
    "RoundAbortedError",
    "RoundClient",
    "RoundConfig",
    "RoundServer",
    "StaleMessageError",
    "UnsafeRequestError",
    "VectorSum",
    "clear_input_message",
    "decode_vector",
    "dequantize_mean",
    "encode_vector",
    "expand_mask",
    "max_aggregate",
    "neighbours",
    "pack_residues",
    "packed_size",
    "parse_pool_spec",
    "quantize",
    "security_problem",
    "share_holders",
    "unpack_residues",
    "weighted_input",
]
