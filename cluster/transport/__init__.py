"""Peer transport: Raft messages and database snapshots between members over gRPC streams.

See transport.py for the contract, peer.py for the sending side, receiver.py for the receiving side and
cluster/api/proto/quorumpb/raft.proto for the wire protocol.
"""

from .codec import MalformedMessage, decode_batch, encode_batch, message_from_pb, message_to_pb
from .peer import SenderOptions
from .stats import PeerStats
from .transport import PeerTransport, build_peer_server

__all__ = [
    "MalformedMessage",
    "PeerStats",
    "PeerTransport",
    "SenderOptions",
    "build_peer_server",
    "decode_batch",
    "encode_batch",
    "message_from_pb",
    "message_to_pb",
]
