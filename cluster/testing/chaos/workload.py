"""The KV clients of a chaos run: concurrent puts, txns, deletes and linearizable ranges over raw gRPC
stubs, every one recorded in the history with its outcome.

Raw stubs, not the project's client: a client that retries would turn one request into several and hide
what the cluster did. Each client talks to one member and moves to the next after an error, as etcd's
clients do. Values are unique per run (``c<client>-<n>``), which is what lets the checker tell which
unknown-outcome write a read observed. Writes that fail are "unknown" (a timeout or broken connection
says nothing about whether the proposal was applied) unless the error says the request was rejected
before it was proposed; failed reads change nothing and are recorded as "failed".
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import Any

import grpc

from cluster.api.gen.etcdserverpb import rpc_pb2_grpc
from cluster.testing.chaos import wire
from cluster.testing.chaos.history import (
    Compare,
    Delete,
    History,
    Outcome,
    Put,
    Range,
    RangeResult,
    Request,
    Response,
    Txn,
    TxnOp,
)

DEFINITE_FAILURES = frozenset({grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED})
"""Errors that mean the request was never proposed."""


@dataclass(frozen=True, slots=True)
class WorkloadConfig:
    prefix: bytes = b"/chaos/"
    keys: int = 6
    clients: int = 4
    op_timeout: float = 2.0
    pause: tuple[float, float] = (0.002, 0.03)
    """Think time between a client's operations: keeps histories small enough to search."""

    def key(self, i: int) -> bytes:
        return self.prefix + b"k%d" % i

    @property
    def keyspace(self) -> tuple[bytes, bytes]:
        return self.prefix, self.prefix[:-1] + bytes([self.prefix[-1] + 1])


class Channels:
    """One grpc.aio channel per endpoint, opened lazily; ``next_endpoint`` after an error."""

    def __init__(self, endpoints: list[str], first: int) -> None:
        self.endpoints = endpoints
        self.index = first % len(endpoints)
        self._channels: dict[str, grpc.aio.Channel] = {}

    def current(self) -> grpc.aio.Channel:
        ep = self.endpoints[self.index]
        if ep not in self._channels:
            self._channels[ep] = grpc.aio.insecure_channel(ep)
        return self._channels[ep]

    def next_endpoint(self) -> None:
        self.index = (self.index + 1) % len(self.endpoints)

    async def close(self) -> None:
        for ch in self._channels.values():
            await ch.close(None)


async def execute(kv: Any, request: Request, timeout: float) -> Response:
    """Send one request over a KV stub and translate the response."""
    if isinstance(request, Put):
        resp = await kv.Put(wire.put(request), timeout=timeout)
    elif isinstance(request, Range):
        resp = await kv.Range(wire.range_(request), timeout=timeout)
    elif isinstance(request, Delete):
        resp = await kv.DeleteRange(wire.delete(request), timeout=timeout)
    else:
        resp = await kv.Txn(wire.txn(request), timeout=timeout)
    return wire.response(request, resp)


def _is_write(request: Request) -> bool:
    if isinstance(request, Txn):
        return any(not isinstance(o, Range) for o in (*request.success, *request.failure))
    return not isinstance(request, Range)


async def perform(
    history: History, channels: Channels, client: int, request: Request, timeout: float
) -> Response | None:
    """Run and record one operation; the response if it succeeded."""
    invoke = time.monotonic()
    try:
        resp = await execute(rpc_pb2_grpc.KVStub(channels.current()), request, timeout)
    except (TimeoutError, grpc.aio.AioRpcError, OSError) as exc:
        code = exc.code() if isinstance(exc, grpc.aio.AioRpcError) else None
        detail = exc.details() if isinstance(exc, grpc.aio.AioRpcError) else repr(exc)
        outcome: Outcome = "unknown" if _is_write(request) and code not in DEFINITE_FAILURES else "failed"
        history.record(client, request, invoke, outcome, error=f"{code}: {detail}")
        channels.next_endpoint()
        return None
    history.record(client, request, invoke, "ok", resp)
    return resp


class KvClient:
    """One client's loop of random operations until ``stop`` is set."""

    def __init__(
        self, client: int, endpoints: list[str], history: History, seed: int, cfg: WorkloadConfig
    ) -> None:
        self.client = client
        self.cfg = cfg
        self.history = history
        self.rng = random.Random(seed * 1000 + client)
        self.channels = Channels(endpoints, client)
        self.seq = 0
        self.seen: dict[bytes, tuple[bytes, int]] = {}
        """key -> (value, mod_revision) last read by this client: material for txn compares."""

    def _value(self) -> bytes:
        self.seq += 1
        return b"c%d-%d" % (self.client, self.seq)

    def next_request(self) -> Request:
        rng, cfg = self.rng, self.cfg
        key = cfg.key(rng.randrange(cfg.keys))
        roll = rng.random()
        if roll < 0.35:
            return Put(key, self._value())
        if roll < 0.60:
            return Range(key) if rng.random() < 0.5 else Range(*cfg.keyspace)
        if roll < 0.88:
            return self._txn(key)
        if roll < 0.97:
            return Delete(key)
        lo, hi = sorted(rng.sample(range(cfg.keys), 2))
        return Delete(cfg.key(lo), cfg.key(hi))

    def _txn(self, key: bytes) -> Txn:
        rng = self.rng
        value, mod = self.seen.get(key, (b"none", rng.randrange(1, 10)))
        cmp = rng.choice(
            [
                Compare(key, "mod", "=", mod),
                Compare(key, "value", "=", value),
                Compare(key, "version", ">", 0),
            ]
        )
        success: tuple[TxnOp, ...] = (Put(key, self._value()),)
        other = self.cfg.key(rng.randrange(self.cfg.keys))
        if other != key and rng.random() < 0.3:  # etcd rejects a txn touching one key twice
            extra: TxnOp = Put(other, self._value()) if rng.random() < 0.7 else Delete(other)
            success = (*success, extra)
        return Txn((cmp,), success, (Range(key),))

    def _remember(self, resp: Response) -> None:
        for res in resp.results:
            if isinstance(res, RangeResult):
                for kv in res.kvs:
                    self.seen[kv.key] = (kv.value, kv.mod_revision)

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                resp = await perform(
                    self.history, self.channels, self.client, self.next_request(), self.cfg.op_timeout
                )
                if resp is not None:
                    self._remember(resp)
                    await asyncio.sleep(self.rng.uniform(*self.cfg.pause))
                else:  # back off: a member that refuses connections answers at once
                    await asyncio.sleep(self.rng.uniform(0.05, 0.2))
        finally:
            await self.channels.close()
