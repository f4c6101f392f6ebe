"""Sans-IO Raft consensus core modelled on etcd 3.4's raft package.

Pure state machine: no sockets, clock, disk or asyncio. The driver feeds it ticks, messages and
proposals through `RawNode` and carries out the `Ready` it returns.
"""

from .codec import decode_conf_change, encode_conf_change
from .errors import (
    CompactedError,
    ProposalDropped,
    RaftError,
    SnapOutOfDateError,
    SnapshotTemporarilyUnavailable,
    StepLocalMessage,
    StepPeerNotFound,
    UnavailableError,
)
from .raft import Raft, RaftConfig
from .rawnode import ProgressStatus, RawNode, Status, bootstrap
from .read_only import ReadOnlyOption
from .storage import MemoryStorage, Storage
from .tracker import ProgressState

__all__ = [
    "CompactedError",
    "MemoryStorage",
    "ProgressState",
    "ProgressStatus",
    "ProposalDropped",
    "Raft",
    "RaftConfig",
    "RaftError",
    "RawNode",
    "ReadOnlyOption",
    "SnapOutOfDateError",
    "SnapshotTemporarilyUnavailable",
    "Status",
    "StepLocalMessage",
    "StepPeerNotFound",
    "Storage",
    "UnavailableError",
    "bootstrap",
    "decode_conf_change",
    "encode_conf_change",
]
