"""Errors the Raft core raises to its driver.

They mirror etcd's raft errors so the driver can translate them into the same client-facing errors.
"""

from __future__ import annotations


class RaftError(Exception):
    """Base class of every error raised by the Raft core."""


class ProposalDropped(RaftError):
    """The proposal was not appended: no leader known, leadership transfer in progress, quota hit, or
    this node has been removed. The caller may retry later."""

    def __init__(self, reason: str = "raft proposal dropped") -> None:
        super().__init__(reason)


class StepLocalMessage(RaftError):
    """A message type that only the core generates for itself was handed to `step`."""


class StepPeerNotFound(RaftError):
    """A response came from a node that is not part of the configuration."""


class CompactedError(RaftError):
    """The requested index predates the last compaction of the log."""

    def __init__(self) -> None:
        super().__init__("requested index is unavailable due to compaction")


class UnavailableError(RaftError):
    """The requested index is beyond the end of stable storage."""

    def __init__(self) -> None:
        super().__init__("requested entry at index is unavailable")


class SnapOutOfDateError(RaftError):
    """A snapshot older than the one already held was offered to storage."""

    def __init__(self) -> None:
        super().__init__("requested index is older than the existing snapshot")


class SnapshotTemporarilyUnavailable(RaftError):
    """Storage cannot produce a snapshot right now; the leader retries later."""

    def __init__(self) -> None:
        super().__init__("snapshot is temporarily unavailable")
