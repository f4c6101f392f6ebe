"""Every upstream watch of one caller identity on one Watch call to the cluster.

The cluster sees one stream and one watcher per coalesced group, however many clients watch through
the proxy. Watch ids on the upstream call are chosen here (WatchCreateRequest.watch_id, etcd 3.4), so
responses are routed by id without matching creations in order. When the call breaks (member down,
no leader: the call is made with `hasleader`) it is made again on another member and every
subscriber is re-created from the revision it has reached, so clients see no gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Protocol

import grpc
import grpc.aio

from cluster.api.gen.etcdserverpb import rpc_pb2
from cluster.api.grpc_names import WATCH
from grpcproxy.upstream import Upstream, UpstreamError

log = logging.getLogger("quorum.grpcproxy")

RECONNECT_BACKOFF_S = 0.1
PROGRESS_TIMEOUT_S = 5.0


class Subscriber(Protocol):
    def create_request(self) -> rpc_pb2.WatchCreateRequest:
        """The watch to create now: from the revision the subscriber has reached."""

    def on_response(self, resp: rpc_pb2.WatchResponse) -> None:
        """A response for this subscriber's watch id (created, events, progress, canceled)."""

    def on_disconnect(self) -> None:
        """The upstream call broke; the watch will be created again on the next one."""


class WatchMux:
    def __init__(self, upstream: Upstream, metadata: Sequence[tuple[str, str]]) -> None:
        self._upstream = upstream
        self._metadata = (*metadata, ("hasleader", "true"))
        self._subs: dict[int, Subscriber] = {}
        self._next_id = 1  # 0 would ask the member to pick the id
        self._out: asyncio.Queue[rpc_pb2.WatchRequest] | None = None
        self._task: asyncio.Task[None] | None = None
        self._progress: list[asyncio.Future[rpc_pb2.ResponseHeader]] = []
        self.header = rpc_pb2.ResponseHeader()
        """The last header the cluster sent (cluster id, member id, revision, raft term)."""
        self.connected = asyncio.Event()

    def __len__(self) -> int:
        return len(self._subs)

    def add(self, sub: Subscriber) -> int:
        wid = self._next_id
        self._next_id += 1
        self._subs[wid] = sub
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="grpcproxy-watch-mux")
        elif self._out is not None:
            self._out.put_nowait(self._create(wid, sub))
        return wid

    def remove(self, wid: int) -> None:
        if self._subs.pop(wid, None) is not None and self._out is not None:
            cancel = rpc_pb2.WatchCancelRequest(watch_id=wid)
            self._out.put_nowait(rpc_pb2.WatchRequest(cancel_request=cancel))

    async def progress(self) -> rpc_pb2.ResponseHeader:
        """The header of the cluster's answer to a progress request: every upstream watch has been
        sent every event up to its revision."""
        await asyncio.wait_for(self.connected.wait(), PROGRESS_TIMEOUT_S)
        waiter: asyncio.Future[rpc_pb2.ResponseHeader] = asyncio.get_running_loop().create_future()
        self._progress.append(waiter)
        if self._out is not None:
            self._out.put_nowait(rpc_pb2.WatchRequest(progress_request=rpc_pb2.WatchProgressRequest()))
        return await asyncio.wait_for(waiter, PROGRESS_TIMEOUT_S)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @staticmethod
    def _create(wid: int, sub: Subscriber) -> rpc_pb2.WatchRequest:
        req = sub.create_request()
        req.watch_id = wid
        return rpc_pb2.WatchRequest(create_request=req)

    async def _run(self) -> None:
        while True:
            try:
                await self._serve_one_call()
            except UpstreamError as exc:
                log.warning("watch upstream unavailable", extra={"error": exc.details})
            except grpc.aio.AioRpcError as exc:
                log.info("watch upstream call ended", extra={"code": exc.code().name, "error": exc.details()})
            self.connected.clear()
            self._out = None
            for waiter in self._progress:
                if not waiter.done():
                    waiter.set_exception(UpstreamError(grpc.StatusCode.UNAVAILABLE, "watch upstream lost"))
            self._progress.clear()
            for sub in list(self._subs.values()):
                sub.on_disconnect()
            self._upstream.client.fail_over()
            await asyncio.sleep(RECONNECT_BACKOFF_S)

    async def _serve_one_call(self) -> None:
        channel = await self._upstream.channel()
        call = channel.stream_stream(
            WATCH,
            request_serializer=rpc_pb2.WatchRequest.SerializeToString,
            response_deserializer=rpc_pb2.WatchResponse.FromString,
        )(metadata=self._metadata)  # type: ignore[call-arg]
        out: asyncio.Queue[rpc_pb2.WatchRequest] = asyncio.Queue()
        for wid, sub in self._subs.items():
            out.put_nowait(self._create(wid, sub))
        self._out = out
        writer = asyncio.create_task(self._write(call, out), name="grpcproxy-watch-writer")
        self.connected.set()
        try:
            async for resp in call:
                self._route(resp)
        finally:
            writer.cancel()
            call.cancel()

    @staticmethod
    async def _write(call: grpc.aio.StreamStreamCall, out: asyncio.Queue[rpc_pb2.WatchRequest]) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
            while True:
                await call.write(await out.get())

    def _route(self, resp: rpc_pb2.WatchResponse) -> None:
        self.header = resp.header
        wid = resp.watch_id
        if wid == -1 and not resp.created and not resp.canceled and not resp.events:
            waiters, self._progress = self._progress, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(resp.header)
            return
        sub = self._subs.get(wid)
        if sub is not None:
            if resp.canceled:
                del self._subs[wid]
            sub.on_response(resp)
