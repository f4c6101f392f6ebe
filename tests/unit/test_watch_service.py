"""The Watch servicer in-process: bytes from the hub reach the client as WatchResponses, and a call that
ends (cancelled or failed) takes its watchers with it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import pytest

from cluster.api.gen.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from cluster.mvcc import KVStore
from cluster.services.watch import add_watch_service
from cluster.storage.backend import Backend
from tests.unit.watch_harness import Create, Harness, run


@pytest.fixture
def store(tmp_path: Path) -> Iterator[KVStore]:
    be = Backend(tmp_path / "db", map_size=64 << 20)
    yield KVStore(be)
    be.close()


@asynccontextmanager
async def watch_call(h: Harness) -> AsyncIterator[Any]:
    """A Watch call to an in-process server whose servicer uses `h`'s hub."""
    server = grpc.aio.server()
    node = SimpleNamespace(watch_hub=h.hub, is_learner=lambda: False, auth=SimpleNamespace(enabled=False))
    add_watch_service(node, server)  # type: ignore[arg-type]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            yield rpc_pb2_grpc.WatchStub(ch).Watch()
    finally:
        await server.stop(0)


async def _wait_for(cond: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


def test_events_reach_the_client_and_a_cancelled_call_drops_its_watchers(store: KVStore) -> None:
    h = Harness(store)

    async def body() -> None:
        async with watch_call(h) as call:
            for key in (b"a", b"b"):
                await call.write(rpc_pb2.WatchRequest(create_request=Create(key=key)))
            created = [await call.read() for _ in range(2)]
            assert [(r.watch_id, r.created) for r in created] == [(0, True), (1, True)]
            h.put(b"b", b"x")
            resp = await call.read()
            assert (resp.watch_id, resp.events[0].kv.key, resp.header.revision) == (1, b"b", 2)
            await call.done_writing()  # half-close: the stream stays, as in etcd
            h.put(b"a", b"y")
            assert (await call.read()).watch_id == 0
            assert h.hub.watcher_count == 2
            call.cancel()
            await _wait_for(lambda: h.hub.watcher_count == 0 and not h.hub.streams)

    run(body())


def test_closing_the_hub_ends_open_calls(store: KVStore) -> None:
    h = Harness(store)

    async def body() -> None:
        async with watch_call(h) as call:
            await call.write(rpc_pb2.WatchRequest(create_request=Create(key=b"a")))
            await call.read()
            h.hub.close()
            assert await call.read() == grpc.aio.EOF
            assert await call.code() == grpc.StatusCode.OK

    run(body())
