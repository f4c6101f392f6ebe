"""Logical watch streams of a chaos run, resumed across failures the way etcd's clients resume them.

A gRPC watch ends when its member dies, is cut off or cancels it; the logical stream then opens a new
watch on the next member from the revision after the last event it delivered (after a compaction
cancel: from the compact revision, the only gap allowed). Every response is recorded with its receive
time, so the checker can judge the stream as a client experiences it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc.aio import EOF  # type: ignore[attr-defined]

from cluster.api.gen.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from cluster.testing.chaos import wire
from cluster.testing.chaos.history import WatchResponse, WatchSegment, WatchStream
from cluster.testing.chaos.workload import Channels


@dataclass
class LogicalWatch:
    id: int
    key: bytes
    range_end: bytes
    prev_kv: bool
    start_revision: int
    endpoints: list[str]
    segments: list[WatchSegment] = field(default_factory=list)
    last_revision: int = 0
    """The revision of the last event delivered (0 before any)."""
    progressed: asyncio.Event = field(default_factory=asyncio.Event)

    def stream(self) -> WatchStream:
        return WatchStream(self.id, self.key, self.range_end, self.prev_kv, tuple(self.segments))

    async def wait_for(self, revision: int, timeout: float) -> bool:
        """Wait until an event at ``revision`` or later was delivered; False on timeout."""
        deadline = time.monotonic() + timeout
        while self.last_revision < revision:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.progressed.clear()
            try:
                await asyncio.wait_for(self.progressed.wait(), min(remaining, 0.5))
            except TimeoutError:
                pass
        return True

    async def run(self, stop: asyncio.Event) -> None:
        channels = Channels(self.endpoints, self.id)
        start = self.start_revision
        try:
            while not stop.is_set():
                start = await self._segment(channels.current(), start, stop)
                channels.next_endpoint()
                if not stop.is_set():
                    await asyncio.sleep(0.1)
        finally:
            await channels.close()

    async def _segment(self, channel: grpc.aio.Channel, start: int, stop: asyncio.Event) -> int:
        """One gRPC watch from ``start``; returns where the next one must start."""
        responses: list[WatchResponse] = []
        end = ""
        resume = start
        call: Any = rpc_pb2_grpc.WatchStub(channel).Watch()
        stopping = asyncio.ensure_future(stop.wait())
        try:
            create = rpc_pb2.WatchCreateRequest(
                key=self.key, range_end=self.range_end, start_revision=start, prev_kv=self.prev_kv
            )
            await call.write(rpc_pb2.WatchRequest(create_request=create))
            while True:
                reading = asyncio.ensure_future(call.read())
                await asyncio.wait({reading, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not reading.done():
                    reading.cancel()
                    break
                resp = reading.result()
                if resp is EOF:
                    end = "EOF"
                    break
                if resp.created and not resp.canceled:
                    continue
                events = tuple(wire.event(e) for e in resp.events)
                progress = not events and not resp.canceled and not resp.compact_revision
                responses.append(
                    WatchResponse(
                        time.monotonic(),
                        events,
                        resp.compact_revision,
                        resp.canceled,
                        resp.header.revision,
                        progress,
                    )
                )
                if events:
                    self.last_revision = events[-1].kv.mod_revision
                    resume = self.last_revision + 1
                    self.progressed.set()
                if resp.canceled:
                    end = f"canceled: {resp.cancel_reason}"
                    if resp.compact_revision:
                        resume = max(resume, resp.compact_revision)
                    break
        except (grpc.aio.AioRpcError, OSError) as exc:
            end = f"{exc.code() if isinstance(exc, grpc.aio.AioRpcError) else exc!r}"
        finally:
            stopping.cancel()
            call.cancel()
            self.segments.append(WatchSegment(start, tuple(responses), end))
        return resume
