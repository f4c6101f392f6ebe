"""The KV clients of a chaos run: concurrent puts (some with a lease), txns, deletes, linearizable and
serializable ranges, lease grants and revokes over raw gRPC stubs, and keep-alives for some leases,
every one recorded in the history with its outcome.

Raw stubs, not the project's client: a client that retries would turn one request into several and hide
what the cluster did. Each client talks to one member and moves to the next after an error, as etcd's
clients do. Values are unique per run (``c<client>-<n>``), which is what lets the checker tell which
unknown-outcome write a read observed. Writes that fail are "unknown" (a timeout or broken connection
says nothing about whether the proposal was applied) unless the error says the request was rejected
before it was proposed; failed reads change nothing and are recorded as "failed". "requested lease not
found" is an answer (the request was applied and found no lease), recorded as ok with that error.

Leases have short TTLs and one of three fates, chosen at grant: kept alive (a keep-alive every
``keepalive_every`` seconds until the run ends), revoked by the client a little later, or left to expire
(and still used for puts for a while, which then fail with "lease not found").
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import Any

import grpc

from cluster.api.gen.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from cluster.testing.chaos import wire
from cluster.testing.chaos.history import (
    Compare,
    Delete,
    History,
    LeaseGrant,
    LeaseKeepAlive,
    LeaseRevoke,
    Outcome,
    Put,
    Range,
    RangeResult,
    Request,
    Response,
    Txn,
    TxnOp,
    member_session,
)
from cluster.testing.chaos.model import LEASE_NOT_FOUND

DEFINITE_FAILURES = frozenset({grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED})
"""Errors that mean the request was never proposed."""
ETCD_LEASE_NOT_FOUND = "etcdserver: requested lease not found"


@dataclass(frozen=True, slots=True)
class WorkloadConfig:
    prefix: bytes = b"/chaos/"
    keys: int = 6
    clients: int = 4
    op_timeout: float = 2.0
    pause: tuple[float, float] = (0.002, 0.03)
    """Think time between a client's operations: keeps histories small enough to search."""
    leases: bool = True
    lease_ttl: tuple[int, int] = (2, 5)
    keepalive_every: float = 0.5
    serializable: float = 0.4
    """The share of ranges that are serializable."""

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
        self.switches = 0
        """How many times the client moved on (each move starts a new member connection)."""
        self._channels: dict[str, grpc.aio.Channel] = {}

    def current(self) -> grpc.aio.Channel:
        ep = self.endpoints[self.index]
        if ep not in self._channels:
            self._channels[ep] = grpc.aio.insecure_channel(ep)
        return self._channels[ep]

    def next_endpoint(self) -> None:
        self.index = (self.index + 1) % len(self.endpoints)
        self.switches += 1

    async def close(self) -> None:
        for ch in self._channels.values():
            await ch.close(None)


async def execute(channel: grpc.aio.Channel, request: Request, timeout: float) -> Response:
    """Send one request over ``channel`` and translate the response."""
    kv: Any = rpc_pb2_grpc.KVStub(channel)
    lease: Any = rpc_pb2_grpc.LeaseStub(channel)
    if isinstance(request, LeaseGrant):
        grant = rpc_pb2.LeaseGrantRequest(ID=request.lease, TTL=request.ttl)
        return wire.response(request, await lease.LeaseGrant(grant, timeout=timeout))
    if isinstance(request, LeaseRevoke):
        revoke = rpc_pb2.LeaseRevokeRequest(ID=request.lease)
        return wire.response(request, await lease.LeaseRevoke(revoke, timeout=timeout))
    if isinstance(request, LeaseKeepAlive):
        return wire.response(request, await _keep_alive_once(lease, request.lease, timeout))
    if isinstance(request, Put):
        resp = await kv.Put(wire.put(request), timeout=timeout)
    elif isinstance(request, Range):
        resp = await kv.Range(wire.range_(request), timeout=timeout)
    elif isinstance(request, Delete):
        resp = await kv.DeleteRange(wire.delete(request), timeout=timeout)
    elif isinstance(request, Txn):
        resp = await kv.Txn(wire.txn(request), timeout=timeout)
    else:
        raise TypeError(f"not a client request: {request!r}")
    return wire.response(request, resp)


async def _keep_alive_once(lease: Any, lease_id: int, timeout: float) -> Any:
    """One request and its answer on a fresh LeaseKeepAlive stream."""
    call = lease.LeaseKeepAlive(timeout=timeout)
    try:
        await call.write(rpc_pb2.LeaseKeepAliveRequest(ID=lease_id))
        resp = await call.read()
        if resp is grpc.aio.EOF:  # type: ignore[attr-defined]
            raise OSError("keep-alive stream closed without an answer")
        return resp
    finally:
        call.cancel()


def _is_write(request: Request) -> bool:
    if isinstance(request, Txn):
        return any(not isinstance(o, Range) for o in (*request.success, *request.failure))
    return not isinstance(request, Range | LeaseKeepAlive)


async def perform(
    history: History,
    channels: Channels,
    client: int,
    request: Request,
    timeout: float,
    *,
    fronted: bool = False,
) -> Response | None:
    """Run and record one operation; the response if it succeeded. ``fronted``: the endpoints are
    proxies, so which member answered is unknown (no session for the monotonic-read check)."""
    endpoint = channels.endpoints[channels.index]
    incarnation = history.incarnations.get(endpoint, 0)
    session = "" if fronted else member_session(client, endpoint, incarnation, channels.switches)
    invoke = time.monotonic()
    try:
        resp = await execute(channels.current(), request, timeout)
    except (TimeoutError, grpc.aio.AioRpcError, OSError) as exc:
        code = exc.code() if isinstance(exc, grpc.aio.AioRpcError) else None
        detail = exc.details() if isinstance(exc, grpc.aio.AioRpcError) else repr(exc)
        if code == grpc.StatusCode.NOT_FOUND and detail == ETCD_LEASE_NOT_FOUND:
            history.record(client, request, invoke, "ok", Response(0, error=LEASE_NOT_FOUND), session=session)
            return None
        outcome: Outcome = "unknown" if _is_write(request) and code not in DEFINITE_FAILURES else "failed"
        history.record(client, request, invoke, outcome, error=f"{code}: {detail}", session=session)
        channels.next_endpoint()
        return None
    history.record(client, request, invoke, "ok", resp, session=session)
    return resp


class KvClient:
    """One client's loop of random operations until ``stop`` is set."""

    def __init__(
        self,
        client: int,
        endpoints: list[str],
        history: History,
        seed: int,
        cfg: WorkloadConfig,
        *,
        fronted: bool = False,
    ) -> None:
        self.client = client
        self.cfg = cfg
        self.history = history
        self.fronted = fronted
        self.rng = random.Random(seed * 1000 + client)
        self.channels = Channels(endpoints, client)
        self.seq = 0
        self.seen: dict[bytes, tuple[bytes, int]] = {}
        """key -> (value, mod_revision) last read by this client: material for txn compares."""
        self.leases: dict[int, str] = {}
        """Lease ID -> its fate ("keep", "revoke" or "expire"); the last few granted by this client."""
        self.lease_seq = 0

    def _value(self) -> bytes:
        self.seq += 1
        return b"c%d-%d" % (self.client, self.seq)

    def next_request(self) -> Request:
        rng, cfg = self.rng, self.cfg
        key = cfg.key(rng.randrange(cfg.keys))
        roll = rng.random()
        if cfg.leases and roll < 0.08:
            return self._lease_request()
        if roll < 0.35:
            lease = rng.choice(list(self.leases)) if self.leases and rng.random() < 0.4 else 0
            return Put(key, self._value(), lease)
        if roll < 0.60:
            start, end = (key, b"") if rng.random() < 0.5 else cfg.keyspace
            return Range(start, end, rng.random() < cfg.serializable)
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

    def _lease_request(self) -> Request:
        """Grant a lease (IDs unique per run: the client in the high bits), or revoke one meant to be."""
        doomed = [lease for lease, fate in self.leases.items() if fate == "revoke"]
        if doomed and self.rng.random() < 0.4:
            lease = self.rng.choice(doomed)
            del self.leases[lease]
            return LeaseRevoke(lease)
        self.lease_seq += 1
        lease = ((self.client + 1) << 32) | self.lease_seq
        self.leases[lease] = self.rng.choice(("keep", "revoke", "expire"))
        while len(self.leases) > 4:
            del self.leases[next(iter(self.leases))]
        return LeaseGrant(lease, self.rng.randint(*self.cfg.lease_ttl))

    async def keep_alive(self, stop: asyncio.Event) -> None:
        """Keep this client's "keep" leases alive (every one ever granted, until the run ends)."""
        kept: set[int] = set()
        channels = Channels(self.channels.endpoints, self.client + 1)
        try:
            while not stop.is_set():
                kept |= {lease for lease, fate in self.leases.items() if fate == "keep"}
                for lease in sorted(kept):
                    resp = await perform(
                        self.history, channels, self.client, LeaseKeepAlive(lease), self.cfg.op_timeout,
                        fronted=self.fronted,
                    )  # fmt: skip
                    if resp is not None and resp.ttl <= 0:
                        kept.discard(lease)
                try:
                    await asyncio.wait_for(stop.wait(), self.cfg.keepalive_every)
                except TimeoutError:
                    pass
        finally:
            await channels.close()

    def _remember(self, resp: Response) -> None:
        for res in resp.results:
            if isinstance(res, RangeResult):
                for kv in res.kvs:
                    self.seen[kv.key] = (kv.value, kv.mod_revision)

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                resp = await perform(
                    self.history, self.channels, self.client, self.next_request(), self.cfg.op_timeout,
                    fronted=self.fronted,
                )  # fmt: skip
                if resp is not None:
                    self._remember(resp)
                    await asyncio.sleep(self.rng.uniform(*self.cfg.pause))
                else:  # back off: a member that refuses connections answers at once
                    await asyncio.sleep(self.rng.uniform(0.05, 0.2))
        finally:
            await self.channels.close()
