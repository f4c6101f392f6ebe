"""One Watch call carrying many watchers, as clientv3 shares a stream between the watches of a context.

Watchers are created one at a time on the call; the server answers creations in order, so the n-th
``created`` response belongs to the n-th creation. Responses are then routed by watch id, fragments
joined; a progress response (watch id -1, no events) goes to every watcher, as clientv3 broadcasts it.
When the call ends every watcher's iteration ends (with the call's error, if any).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import grpc.aio

from cluster.api.gen.etcdserverpb import rpc_pb2

_Item = rpc_pb2.WatchResponse | BaseException | None


class WatchSession:
    """Watchers on one Watch call; ``open`` with a started call, ``close`` when done."""

    def __init__(self, call: Any, translate: Callable[[grpc.aio.AioRpcError], Exception]) -> None:
        self._call = call
        self._translate = translate
        self._write_lock = asyncio.Lock()
        self._creating: collections.deque[asyncio.Queue[_Item]] = collections.deque()
        self._watchers: dict[int, asyncio.Queue[_Item]] = {}
        self._fragments: dict[int, rpc_pb2.WatchResponse] = {}
        self._reader = asyncio.create_task(self._read(), name="watch-session-reader")

    async def create(self, request: rpc_pb2.WatchCreateRequest) -> AsyncIterator[rpc_pb2.WatchResponse]:
        """Send the creation of a watcher now; its responses (the creation response first) until it
        is canceled or the call ends."""
        queue: asyncio.Queue[_Item] = asyncio.Queue()
        async with self._write_lock:
            self._creating.append(queue)
            await self._write(rpc_pb2.WatchRequest(create_request=request))
        return self._responses(queue)

    @staticmethod
    async def _responses(queue: asyncio.Queue[_Item]) -> AsyncIterator[rpc_pb2.WatchResponse]:
        while True:
            item = await queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
            if item.canceled:
                return

    async def request_progress(self) -> None:
        async with self._write_lock:
            await self._write(rpc_pb2.WatchRequest(progress_request=rpc_pb2.WatchProgressRequest()))

    async def _write(self, request: rpc_pb2.WatchRequest) -> None:
        try:
            await self._call.write(request)
        except grpc.aio.AioRpcError as err:
            raise self._translate(err) from None

    async def _read(self) -> None:
        end: _Item = None
        try:
            async for resp in self._call:
                self._route(resp)
        except grpc.aio.AioRpcError as err:
            end = self._translate(err)
        except asyncio.CancelledError:
            pass
        for queue in [*self._creating, *self._watchers.values()]:
            queue.put_nowait(end)
        self._creating.clear()
        self._watchers.clear()

    def _route(self, resp: rpc_pb2.WatchResponse) -> None:
        wid = resp.watch_id
        if resp.created:
            if not self._creating:
                return
            queue = self._creating.popleft()
            if not resp.canceled:
                self._watchers[wid] = queue
            queue.put_nowait(resp)
            return
        if wid == -1 and not resp.events and not resp.canceled:
            for queue in self._watchers.values():
                queue.put_nowait(resp)
            return
        pending = self._fragments.pop(wid, None)
        if pending is not None:
            pending.events.extend(resp.events)
            resp.ClearField("events")
            resp.events.extend(pending.events)
        if resp.fragment:
            self._fragments[wid] = resp
            return
        target = self._watchers.get(wid)
        if target is None:
            return
        if resp.canceled:
            del self._watchers[wid]
        target.put_nowait(resp)

    async def close(self) -> None:
        self._call.cancel()
        self._reader.cancel()
        try:
            await self._reader
        except asyncio.CancelledError:
            pass
