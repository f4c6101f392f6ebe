"""etcdserverpb.Watch as the proxy serves it: client streams whose watchers feed on coalesced groups.

Each client stream keeps its watchers by id (chosen by the client or numbered from 0, as a member
does) and an ordered queue of encoded responses written by the call's own task. A stream that lets
its queue grow past `MAX_QUEUED_BYTES` is cut off with UNAVAILABLE so that it never slows the group
(clientv3 then re-creates its watches from the last revision it saw). Progress requests are answered
once the cluster has confirmed a revision for every upstream watch of the caller (a progress request
on the shared upstream call), with the lowest revision this stream's watchers have reached.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc

from cluster.api.gen.etcdserverpb import rpc_pb2
from cluster.api.grpc_names import WATCH
from cluster.watch.stream import ERR_DUPLICATE_ID, ERR_EMPTY_RANGE, INVALID_WATCH_ID
from cluster.watch.wire import control_response, header_field
from grpcproxy.metrics import ProxyMetrics
from grpcproxy.namespace import Namespace
from grpcproxy.upstream import Upstream, UpstreamError, forwarded_metadata, identity_of
from grpcproxy.watch_groups import ClientWatcher, WatchGroups
from grpcproxy.watch_mux import WatchMux

log = logging.getLogger("quorum.grpcproxy")

MAX_QUEUED_BYTES = 64 * 1024 * 1024
TAKE_AT_ONCE = 64
SLOW_CLIENT = "grpcproxy: watch stream too slow; its watchers were dropped"


class ClientStream:
    def __init__(self, groups: WatchGroups, fragment_limit: int) -> None:
        self.groups = groups
        self.fragment_limit = fragment_limit
        self.watchers: dict[int, ClientWatcher] = {}
        self._next_id = 0
        self._out: collections.deque[bytes] = collections.deque()
        self._queued = 0
        self._wakeup = asyncio.Event()
        self.closed = False
        self.too_slow = False

    # ---- output ----------------------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        if self.closed:
            return
        self._out.append(data)
        self._queued += len(data)
        if self._queued > MAX_QUEUED_BYTES:
            self.too_slow = True
            self.close()
        self._wakeup.set()

    async def take(self) -> list[bytes]:
        while not self._out and not self.closed:
            self._wakeup.clear()
            await self._wakeup.wait()
        if self.too_slow:
            return []
        n = min(TAKE_AT_ONCE, len(self._out))
        taken = [self._out.popleft() for _ in range(n)]
        self._queued -= sum(map(len, taken))
        return taken

    def _head(self, revision: int | None = None) -> bytes:
        header = rpc_pb2.ResponseHeader()
        header.CopyFrom(self.groups.mux.header)
        if revision is not None:
            header.revision = revision
        return header_field(header.SerializeToString())

    # ---- requests --------------------------------------------------------------------------------
    def create(self, req: rpc_pb2.WatchCreateRequest) -> None:
        namespace = self.groups.namespace
        if req.range_end and req.range_end != b"\x00" and req.key >= req.range_end:
            self.send(control_response(self._head(), INVALID_WATCH_ID, created=True, canceled=True,
                                       cancel_reason=ERR_EMPTY_RANGE))  # fmt: skip
            return
        wid = req.watch_id
        if wid == 0:
            while self._next_id in self.watchers:
                self._next_id += 1
            wid = self._next_id
            self._next_id += 1
        elif wid in self.watchers:
            self.send(control_response(self._head(), INVALID_WATCH_ID, created=True, canceled=True,
                                       cancel_reason=ERR_DUPLICATE_ID))  # fmt: skip
            return
        if namespace is not None:
            namespace.watch_create(req)
        w = ClientWatcher.from_request(self.send, wid, req, self.fragment_limit)
        self.watchers[wid] = w
        self.groups.add(w)

    def cancel(self, wid: int) -> None:
        w = self.watchers.pop(wid, None)
        if w is None:
            return
        revision = w.group.rev if w.group is not None else None
        self.groups.remove(w)
        self.send(control_response(self._head(revision), wid, canceled=True))

    async def progress(self) -> None:
        try:
            header = await self.groups.mux.progress()
        except (UpstreamError, TimeoutError):
            return
        revision = header.revision
        for w in self.watchers.values():
            group = w.group
            if group is None or not group.created:
                continue
            if group.live:  # the cluster has sent every upstream watch of the call all events <= it
                group.rev = max(group.rev, header.revision)
            revision = min(revision, max(group.rev, w.threshold))
        self.send(control_response(self._head(revision), INVALID_WATCH_ID))

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for w in list(self.watchers.values()):
            self.groups.remove(w)
        self.watchers.clear()
        self._wakeup.set()


class WatchProxy:
    def __init__(self, upstream: Upstream, namespace: Namespace | None, metrics: ProxyMetrics,
                 fragment_limit: int) -> None:  # fmt: skip
        self._upstream = upstream
        self._namespace = namespace
        self._metrics = metrics
        self._fragment_limit = fragment_limit
        self._groups: dict[str, WatchGroups] = {}

    def groups_for(self, context: Any) -> WatchGroups:
        return self._groups_of(identity_of(context), forwarded_metadata(context))

    def _groups_of(self, identity: str, metadata: Sequence[tuple[str, str]]) -> WatchGroups:
        groups = self._groups.get(identity)
        if groups is None:
            mux = WatchMux(self._upstream, [(k, v) for k, v in metadata if k != "hasleader"])
            groups = self._groups[identity] = WatchGroups(mux, self._namespace, self._metrics)
        return groups

    def mux_for_identity(self, identity: str) -> WatchMux:
        """The upstream call of callers without credentials (identity "")."""
        return self._groups_of(identity, ()).mux

    async def close(self) -> None:
        for groups in self._groups.values():
            await groups.mux.close()

    async def Watch(self, requests: AsyncIterator[Any], context: Any) -> None:
        stream = ClientStream(self.groups_for(context), self._fragment_limit)
        receiver = asyncio.create_task(self._receive(requests, stream), name="grpcproxy-watch-recv")
        try:
            while True:
                messages = await stream.take()
                if not messages:
                    break
                for message in messages:
                    await context.write(message)
        finally:
            receiver.cancel()
            stream.close()
        if stream.too_slow:
            await context.abort(grpc.StatusCode.UNAVAILABLE, SLOW_CLIENT)

    @staticmethod
    async def _receive(requests: AsyncIterator[Any], stream: ClientStream) -> None:
        progress: set[asyncio.Task[None]] = set()
        try:
            async for req in requests:
                kind = req.WhichOneof("request_union")
                if kind == "create_request":
                    stream.create(req.create_request)
                elif kind == "cancel_request":
                    stream.cancel(req.cancel_request.watch_id)
                elif kind == "progress_request":
                    task = asyncio.create_task(stream.progress())
                    progress.add(task)
                    task.add_done_callback(progress.discard)
        except asyncio.CancelledError:
            for task in progress:
                task.cancel()
            raise
        except Exception as exc:  # a broken call: end the stream, as etcd's recvLoop error does
            log.debug("watch stream receive failed", extra={"error": str(exc)})
            stream.close()

    def handler(self) -> grpc.RpcMethodHandler:
        return grpc.stream_stream_rpc_method_handler(
            self.Watch, request_deserializer=rpc_pb2.WatchRequest.FromString, response_serializer=None
        )


__all__ = ["WATCH", "ClientStream", "WatchProxy"]
