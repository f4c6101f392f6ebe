"""Linearizable reads through batched ReadIndex rounds.

A reader joins the *open* round; the round closes when the Raft driver starts it (`take`), so no
reader ever shares a round whose index was fixed before the reader arrived. One ReadIndex request
serves every reader of a round. When Raft answers with a ReadState, the round's readers are released
once this member has applied up to the confirmed index.

A ReadIndex request can be lost (a peer stream reconnecting; a new leader that has not committed in
its term drops it, as etcd 3.4's does), so overdue rounds are asked again with the same context —
only the first answer is used — until the request timeout fails them with etcd's ErrTimeout.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable

from cluster.api import errors
from cluster.raft.types import ReadState
from cluster.server.wait import IndexWaiters

_CTX = struct.Struct(">Q")


class ReadRound:
    """The readers sharing one ReadIndex request. Each reader awaits its own future, so a cancelled
    reader cannot cancel the others."""

    __slots__ = ("asked_at", "ctx", "deadline", "readers")

    def __init__(self, ctx: bytes, deadline: float) -> None:
        self.ctx = ctx
        self.deadline = deadline
        self.asked_at = 0.0
        self.readers: list[asyncio.Future[None]] = []

    def on_applied(self, fut: asyncio.Future[None]) -> None:
        self.resolve(fut.exception())

    def resolve(self, exc: BaseException | None) -> None:
        readers, self.readers = self.readers, []
        for fut in readers:
            if fut.done():
                continue
            if exc is None:
                fut.set_result(None)
            else:
                fut.set_exception(exc)


class ReadIndexRounds:
    """Open, in-flight and expiring ReadIndex rounds of one member (event-loop only)."""

    def __init__(
        self,
        applied: IndexWaiters,
        *,
        request_round: Callable[[], None],
        ask_again: Callable[[bytes], None],
        timeout: float,
        retry_after: float,
    ) -> None:
        self._applied = applied
        self._request_round = request_round
        self._ask_again = ask_again
        self._timeout = timeout
        self._retry_after = retry_after
        self._seq = 0
        self._open: ReadRound | None = None
        self._in_flight: dict[bytes, ReadRound] = {}

    async def wait(self) -> None:
        """Return once a read started now may be served from local state (linearizable)."""
        rnd = self._open
        loop = asyncio.get_running_loop()
        if rnd is None:
            self._seq += 1
            rnd = ReadRound(_CTX.pack(self._seq), loop.time() + self._timeout)
            self._open = rnd
            self._request_round()
        fut: asyncio.Future[None] = loop.create_future()
        rnd.readers.append(fut)
        await fut

    def take(self) -> bytes | None:
        """Close the open round and return its context (the driver is starting it)."""
        rnd = self._open
        if rnd is None:
            return None
        self._in_flight[rnd.ctx] = rnd
        self._open = None
        rnd.asked_at = asyncio.get_running_loop().time()
        return rnd.ctx

    def on_read_states(self, states: list[ReadState]) -> None:
        for rs in states:
            rnd = self._in_flight.pop(rs.request_ctx, None)
            if rnd is not None:
                self._applied.wait(rs.index).add_done_callback(rnd.on_applied)

    def sweep(self, now: float) -> None:
        """Fail rounds past the timeout; ask again for rounds whose answer is overdue."""
        for ctx, rnd in list(self._in_flight.items()):
            if rnd.deadline <= now:
                del self._in_flight[ctx]
                rnd.resolve(errors.TIMEOUT())
            elif now - rnd.asked_at >= self._retry_after:
                rnd.asked_at = now
                self._ask_again(ctx)
