"""The federated pool: secure aggregation (SecAgg / SecAgg+), pools and rounds, DP nodes.

Public names only; the machinery lives in the underscore modules.
"""

from federated._client import RoundClient
from federated._graph import neighbours, share_holders
from federated._inprocess import InProcessRound
from federated._keys import Identity, KeyPair
from federated._masking import decode_vector, encode_vector, expand_mask
from federated._quantize import dequantize_mean, max_aggregate, quantize, weighted_input
from federated._server import LocalVectorSum, RoundConfig, RoundServer, VectorSum
from federated._spec import PoolSpec, parse_pool_spec, security_problem
from federated.errors import (
    BadSignatureError,
    DuplicateMessageError,
    MalformedMessageError,
    NotSelectedError,
    PoolSpecError,
    ProtocolError,
    RoundAbortedError,
    StaleMessageError,
    UnsafeRequestError,
)

__all__ = [
    "BadSignatureError",
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
    "decode_vector",
    "dequantize_mean",
    "encode_vector",
    "expand_mask",
    "max_aggregate",
    "neighbours",
    "parse_pool_spec",
    "quantize",
    "security_problem",
    "share_holders",
    "weighted_input",
]
