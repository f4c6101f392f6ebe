"""cluster.client: failover across endpoints and error mapping, against in-process gRPC fakes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import grpc.aio
import pytest

from cluster.api import errors as etcd_errors
from cluster.api.gen.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from cluster.client import CallFailure, Client, ClientError, DeadlineExceeded
from cluster.testing.ports import free_port


class FakeKV(rpc_pb2_grpc.KVServicer):
    """Answers Range with its name as the value, or fails every call with ``fail``."""

    def __init__(
        self, name: str, fail: tuple[grpc.StatusCode, str] | None = None, delay: float = 0.0
    ) -> None:
        self.name = name
        self.fail = fail
        self.delay = delay
        self.calls = 0

    async def _answer(self, context: grpc.aio.ServicerContext, response: Any) -> Any:
        self.calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail is not None:
            await context.abort(*self.fail)
        return response

    async def Range(self, request: rpc_pb2.RangeRequest, context: grpc.aio.ServicerContext) -> Any:
        kv = {"key": request.key, "value": self.name.encode()}
        return await self._answer(context, rpc_pb2.RangeResponse(kvs=[kv], count=1))

    async def Put(self, request: rpc_pb2.PutRequest, context: grpc.aio.ServicerContext) -> Any:
        return await self._answer(context, rpc_pb2.PutResponse())


async def _serve(servicer: FakeKV) -> tuple[grpc.aio.Server, str]:
    server = grpc.aio.server()
    rpc_pb2_grpc.add_KVServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


def _run(body: Callable[..., Awaitable[None]], *fakes: FakeKV) -> None:
    async def main() -> None:
        started = [await _serve(fake) for fake in fakes]
        try:
            await asyncio.wait_for(body(*(address for _, address in started)), 20)
        finally:
            for server, _ in started:
                await server.stop(None)

    asyncio.run(main())


def _dead() -> str:
    return f"127.0.0.1:{free_port()}"


def test_dead_first_endpoint_is_skipped() -> None:
    async def body(live: str) -> None:
        async with Client([_dead(), live], dial_timeout=1.0) as client:
            response = await client.range(rpc_pb2.RangeRequest(key=b"k"), timeout=5)
        assert response.kvs[0].value == b"live"

    _run(body, FakeKV("live"))


def test_unavailable_reads_are_served_by_another_endpoint_and_each_failure_reported() -> None:
    failures: list[CallFailure] = []
    sick = FakeKV("sick", (grpc.StatusCode.UNAVAILABLE, "etcdserver: no leader"))

    async def body(sick_address: str, healthy: str) -> None:
        async with Client([sick_address, healthy], on_call_failed=failures.append) as client:
            for _ in range(5):
                response = await client.range(rpc_pb2.RangeRequest(key=b"k"), timeout=5)
                assert response.kvs[0].value == b"healthy"

    _run(body, sick, FakeKV("healthy"))
    assert len(failures) == sick.calls
    assert all(
        (f.method, f.code, f.details) == ("Range", grpc.StatusCode.UNAVAILABLE, "etcdserver: no leader")
        for f in failures
    )


def test_unavailable_reads_are_retried_until_the_deadline() -> None:
    sick = FakeKV("sick", (grpc.StatusCode.UNAVAILABLE, "etcdserver: no leader"))

    async def body(address: str) -> None:
        async with Client([address]) as client:
            with pytest.raises(DeadlineExceeded):
                await client.range(rpc_pb2.RangeRequest(key=b"k"), timeout=0.5)

    _run(body, sick)
    assert sick.calls > 1


def test_unavailable_write_is_not_repeated() -> None:
    sick = FakeKV("sick", (grpc.StatusCode.UNAVAILABLE, "transport is closing"))

    async def body(sick_address: str) -> None:
        async with Client([sick_address]) as client:
            with pytest.raises(ClientError) as err:
                await client.put(rpc_pb2.PutRequest(key=b"k", value=b"v"), timeout=5)
        assert str(err.value) == "rpc error: code = Unavailable desc = transport is closing"

    _run(body, sick)
    assert sick.calls == 1


def test_etcd_errors_come_back_as_etcd_error_classes() -> None:
    compacted = FakeKV("old", (grpc.StatusCode.OUT_OF_RANGE, etcd_errors.COMPACTED.message))

    async def body(address: str) -> None:
        async with Client([address]) as client:
            with pytest.raises(etcd_errors.COMPACTED):
                await client.range(rpc_pb2.RangeRequest(key=b"k", revision=1), timeout=5)

    _run(body, compacted)


def test_deadline_is_context_deadline_exceeded() -> None:
    async def body(address: str) -> None:
        async with Client([address]) as client:
            with pytest.raises(DeadlineExceeded) as err:
                await client.range(rpc_pb2.RangeRequest(key=b"k"), timeout=0.3)
        assert str(err.value) == "context deadline exceeded"

    _run(body, FakeKV("slow", delay=2.0))


def test_no_reachable_endpoint_fails_at_the_deadline() -> None:
    failures: list[CallFailure] = []

    async def body() -> None:
        async with Client([_dead()], dial_timeout=0.2, on_call_failed=failures.append) as client:
            with pytest.raises(DeadlineExceeded):
                await client.range(rpc_pb2.RangeRequest(key=b"k"), timeout=0.6)

    _run(body)
    assert [f.code for f in failures] == [grpc.StatusCode.DEADLINE_EXCEEDED]
