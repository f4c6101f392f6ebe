"""Rendezvous points between request handlers and the apply loop.

A handler registers interest (a request id, or an applied index) and awaits a future; the apply loop
resolves futures in bulk after each batch. Both structures are touched only from the event loop
thread, so they need no locks.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from typing import Any


class RequestWaiters:
    """Futures keyed by proposal id; resolved when the proposal's entry is applied on this member.

    Every waiter gets the same timeout, so insertion order is deadline order: `expire` only looks at
    the oldest entries, and no per-request timer is needed.
    """

    __slots__ = ("_futures",)

    def __init__(self) -> None:
        self._futures: dict[int, tuple[asyncio.Future[Any], float]] = {}

    def register(self, request_id: int, timeout: float) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._futures[request_id] = (fut, loop.time() + timeout)
        return fut

    def cancel(self, request_id: int) -> None:
        self._futures.pop(request_id, None)

    def expire(self, now: float, error: Callable[[], BaseException]) -> int:
        """Fail every waiter whose deadline passed; returns how many."""
        expired = []
        for request_id, (_, deadline) in self._futures.items():
            if deadline > now:
                break
            expired.append(request_id)
        for request_id in expired:
            fut, _ = self._futures.pop(request_id)
            if not fut.done():
                fut.set_exception(error())
        return len(expired)

    def trigger(self, request_id: int, result: Any) -> None:
        entry = self._futures.pop(request_id, None)
        if entry is None:
            return
        fut = entry[0]
        if not fut.done():
            if isinstance(result, BaseException):
                fut.set_exception(result)
            else:
                fut.set_result(result)

    def fail_all(self, exc: BaseException) -> None:
        futures, self._futures = self._futures, {}
        for fut, _ in futures.values():
            if not fut.done():
                fut.set_exception(exc)

    def __len__(self) -> int:
        return len(self._futures)

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._futures


class IndexWaiters:
    """Futures waiting for the applied index to reach a value (linearizable reads wait here)."""

    __slots__ = ("_heap", "_seq", "applied", "on_wait")

    def __init__(self, applied: int = 0) -> None:
        self._heap: list[tuple[int, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self.applied = applied
        self.on_wait: Callable[[], None] | None = None
        """Called when someone starts waiting for an index not applied yet."""

    @property
    def waiting(self) -> bool:
        return bool(self._heap)

    def wait(self, index: int) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if index <= self.applied:
            fut.set_result(None)
        else:
            heapq.heappush(self._heap, (index, next(self._seq), fut))
            if self.on_wait is not None:
                self.on_wait()
        return fut

    def advance(self, applied: int) -> None:
        self.applied = applied
        heap = self._heap
        while heap and heap[0][0] <= applied:
            _, _, fut = heapq.heappop(heap)
            if not fut.done():
                fut.set_result(None)

    def fail_all(self, exc: BaseException) -> None:
        heap, self._heap = self._heap, []
        for _, _, fut in heap:
            if not fut.done():
                fut.set_exception(exc)
