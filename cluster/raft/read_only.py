"""Pending linearizable reads (ReadIndex) on a leader.

With `ReadOnlyOption.SAFE` a read is answered only after a quorum acknowledged a heartbeat carrying
the read's context, which proves the leader still leads. Requests are queued in arrival order; an
acknowledgement of the newest context confirms every older one too, so one heartbeat round serves
any number of waiting reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

from .types import Message


class ReadOnlyOption(IntEnum):
    SAFE = 0
    """Confirm leadership with a heartbeat round for every batch of reads."""
    LEASE_BASED = 1
    """Trust the leader lease (needs check_quorum and bounded clock drift)."""


@dataclass(slots=True)
class ReadIndexStatus:
    req: Message
    index: int
    acks: set[int] = field(default_factory=set)


class ReadOnly:
    __slots__ = ("option", "pending", "queue")

    def __init__(self, option: ReadOnlyOption) -> None:
        self.option = option
        self.pending: dict[bytes, ReadIndexStatus] = {}
        self.queue: list[bytes] = []

    def add_request(self, index: int, m: Message) -> None:
        ctx = m.entries[0].data
        if ctx in self.pending:
            return
        self.pending[ctx] = ReadIndexStatus(req=m, index=index)
        self.queue.append(ctx)

    def recv_ack(self, node_id: int, ctx: bytes) -> set[int] | None:
        rs = self.pending.get(ctx)
        if rs is None:
            return None
        rs.acks.add(node_id)
        return rs.acks

    def advance(self, ctx: bytes) -> list[ReadIndexStatus]:
        """Dequeue and return every request up to and including the one tagged `ctx`."""
        try:
            pos = self.queue.index(ctx)
        except ValueError:
            return []
        done = self.queue[: pos + 1]
        del self.queue[: pos + 1]
        return [self.pending.pop(c) for c in done]

    def last_pending_request_ctx(self) -> bytes:
        return self.queue[-1] if self.queue else b""
