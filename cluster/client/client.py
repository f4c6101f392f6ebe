"""An asyncio etcd v3 client on grpc.aio that fails over across endpoints.

Requests and responses are the `etcdserverpb` messages themselves, so callers (quorumctl, the
gRPC proxy) see exactly what travels on the wire. Failover follows clientv3's rules: a request
that never reached a server (no connection) may go to the next endpoint whatever it is; a
request that reached a server and failed with UNAVAILABLE is retried elsewhere only when it is
safe to repeat (reads, status, alarms); other failures are raised at once — etcd's named errors
as `cluster.api.errors.EtcdError`, the rest as `ClientError`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio

from cluster.api import errors as etcd_errors
from cluster.api.gen.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from cluster.api.gen.v3electionpb import v3election_pb2, v3election_pb2_grpc
from cluster.api.gen.v3lockpb import v3lock_pb2, v3lock_pb2_grpc
from cluster.client.endpoints import Endpoint
from cluster.client.errors import AuthenticationError, ClientError, DeadlineExceeded, NoEndpoints
from cluster.client.watch_session import WatchSession

MAX_ATTEMPTS = 100
RETRY_BACKOFF = 0.025


@dataclass(frozen=True, slots=True)
class TLSConfig:
    """Files for a TLS connection; all optional (system roots are used without ``ca_file``)."""

    cert_file: str | None = None
    key_file: str | None = None
    ca_file: str | None = None
    server_name: str | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        def read(path: str | None) -> bytes | None:
            if path is None:
                return None
            with open(path, "rb") as handle:
                return handle.read()

        return grpc.ssl_channel_credentials(
            root_certificates=read(self.ca_file),
            private_key=read(self.key_file),
            certificate_chain=read(self.cert_file),
        )


@dataclass(frozen=True, slots=True)
class CallFailure:
    """One failed attempt, reported to ``on_call_failed`` before the client retries or raises."""

    endpoint: str
    method: str
    attempt: int
    code: grpc.StatusCode
    details: str
    pinned: bool = False


_SERVICES: dict[str, Callable[[grpc.aio.Channel], Any]] = {
    "KV": rpc_pb2_grpc.KVStub,
    "Maintenance": rpc_pb2_grpc.MaintenanceStub,
    "Cluster": rpc_pb2_grpc.ClusterStub,
    "Lease": rpc_pb2_grpc.LeaseStub,
    "Auth": rpc_pb2_grpc.AuthStub,
    "Watch": rpc_pb2_grpc.WatchStub,
    "Election": v3election_pb2_grpc.ElectionStub,
    "Lock": v3lock_pb2_grpc.LockStub,
}


class _Connection:
    """A lazily dialled channel to one endpoint, with its stubs."""

    def __init__(self, endpoint: Endpoint, options: list[tuple[str, Any]], tls: TLSConfig | None) -> None:
        self.endpoint = endpoint
        if endpoint.secure or tls is not None:
            creds = (tls or TLSConfig()).credentials()
            if tls is not None and tls.server_name:
                options = [*options, ("grpc.ssl_target_name_override", tls.server_name)]
            self.channel = grpc.aio.secure_channel(endpoint.target, creds, options=options)
        else:
            self.channel = grpc.aio.insecure_channel(endpoint.target, options=options)
        self._stubs: dict[str, Any] = {}

    def stub(self, service: str) -> Any:
        stub = self._stubs.get(service)
        if stub is None:
            stub = self._stubs[service] = _SERVICES[service](self.channel)
        return stub

    async def ready(self, timeout: float) -> bool:
        if self.channel.get_state(try_to_connect=True) == grpc.ChannelConnectivity.READY:
            return True
        try:
            await asyncio.wait_for(self.channel.channel_ready(), timeout)
        except TimeoutError:
            return False
        return True


class Client:
    """etcd v3 client over several endpoints; use as ``async with Client([...]) as c``.

    Every method takes an optional ``timeout`` (seconds, the whole call including retries and
    dialling) and, for the maintenance calls that address one member, an ``endpoint``.
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        dial_timeout: float = 2.0,
        keepalive_time: float = 2.0,
        keepalive_timeout: float = 6.0,
        username: str | None = None,
        password: str | None = None,
        tls: TLSConfig | None = None,
        on_call_failed: Callable[[CallFailure], None] | None = None,
    ) -> None:
        self.endpoints = [Endpoint.parse(e) for e in endpoints]
        self.dial_timeout = dial_timeout
        self._options: list[tuple[str, Any]] = [
            ("grpc.keepalive_time_ms", max(1, int(keepalive_time * 1000))),
            ("grpc.keepalive_timeout_ms", max(1, int(keepalive_timeout * 1000))),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.max_receive_message_length", 2**31 - 1),
        ]
        self._tls = tls
        self._username = username
        self._password = password
        self._token: str | None = None
        self._on_call_failed = on_call_failed
        self._connections: dict[str, _Connection] = {}
        self._current = 0

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        connections, self._connections = list(self._connections.values()), {}
        for conn in connections:
            await conn.channel.close(None)

    # ---- KV ----
    async def range(
        self, request: rpc_pb2.RangeRequest, *, timeout: float | None = None
    ) -> rpc_pb2.RangeResponse:
        return await self._call("KV", "Range", request, timeout=timeout, repeatable=True)

    async def put(self, request: rpc_pb2.PutRequest, *, timeout: float | None = None) -> rpc_pb2.PutResponse:
        return await self._call("KV", "Put", request, timeout=timeout, repeatable=False)

    async def delete_range(
        self, request: rpc_pb2.DeleteRangeRequest, *, timeout: float | None = None
    ) -> rpc_pb2.DeleteRangeResponse:
        return await self._call("KV", "DeleteRange", request, timeout=timeout, repeatable=False)

    async def txn(self, request: rpc_pb2.TxnRequest, *, timeout: float | None = None) -> rpc_pb2.TxnResponse:
        return await self._call("KV", "Txn", request, timeout=timeout, repeatable=False)

    async def compact(
        self, request: rpc_pb2.CompactionRequest, *, timeout: float | None = None
    ) -> rpc_pb2.CompactionResponse:
        return await self._call("KV", "Compact", request, timeout=timeout, repeatable=False)

    # ---- Maintenance ----
    async def status(
        self, *, endpoint: str | None = None, timeout: float | None = None
    ) -> rpc_pb2.StatusResponse:
        return await self._call(
            "Maintenance",
            "Status",
            rpc_pb2.StatusRequest(),
            timeout=timeout,
            repeatable=True,
            endpoint=endpoint,
        )

    async def alarm(
        self, request: rpc_pb2.AlarmRequest, *, timeout: float | None = None
    ) -> rpc_pb2.AlarmResponse:
        return await self._call("Maintenance", "Alarm", request, timeout=timeout, repeatable=True)

    async def alarm_list(self, *, timeout: float | None = None) -> rpc_pb2.AlarmResponse:
        request = rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.GET)
        return await self.alarm(request, timeout=timeout)

    async def hash_kv(
        self, revision: int = 0, *, endpoint: str | None = None, timeout: float | None = None
    ) -> rpc_pb2.HashKVResponse:
        request = rpc_pb2.HashKVRequest(revision=revision)
        return await self._call(
            "Maintenance", "HashKV", request, timeout=timeout, repeatable=True, endpoint=endpoint
        )

    async def defragment(
        self, *, endpoint: str | None = None, timeout: float | None = None
    ) -> rpc_pb2.DefragmentResponse:
        request = rpc_pb2.DefragmentRequest()
        return await self._call(
            "Maintenance", "Defragment", request, timeout=timeout, repeatable=False, endpoint=endpoint
        )

    async def move_leader(
        self, target_id: int, *, timeout: float | None = None
    ) -> rpc_pb2.MoveLeaderResponse:
        request = rpc_pb2.MoveLeaderRequest(targetID=target_id)
        return await self._call("Maintenance", "MoveLeader", request, timeout=timeout, repeatable=False)

    async def snapshot(self, *, timeout: float | None = None) -> AsyncIterator[bytes]:
        """Stream the backend database of the member the client is connected to, in chunks."""
        conn = await self._ready_connection(None, timeout)
        if conn is None:
            raise DeadlineExceeded()
        metadata = await self._metadata(conn, self.dial_timeout)
        call = conn.stub("Maintenance").Snapshot(
            rpc_pb2.SnapshotRequest(), timeout=timeout, metadata=metadata
        )
        try:
            async for response in call:
                yield response.blob
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise DeadlineExceeded() from None
            raise _translate(err, etcd_errors.from_rpc_error(err)) from None

    # ---- Cluster ----
    async def member_list(self, *, timeout: float | None = None) -> rpc_pb2.MemberListResponse:
        return await self._call(
            "Cluster", "MemberList", rpc_pb2.MemberListRequest(), timeout=timeout, repeatable=True
        )

    async def member_add(
        self, request: rpc_pb2.MemberAddRequest, *, timeout: float | None = None
    ) -> rpc_pb2.MemberAddResponse:
        return await self._call("Cluster", "MemberAdd", request, timeout=timeout, repeatable=False)

    async def member_remove(
        self, member_id: int, *, timeout: float | None = None
    ) -> rpc_pb2.MemberRemoveResponse:
        request = rpc_pb2.MemberRemoveRequest(ID=member_id)
        return await self._call("Cluster", "MemberRemove", request, timeout=timeout, repeatable=False)

    async def member_update(
        self, request: rpc_pb2.MemberUpdateRequest, *, timeout: float | None = None
    ) -> rpc_pb2.MemberUpdateResponse:
        return await self._call("Cluster", "MemberUpdate", request, timeout=timeout, repeatable=False)

    async def member_promote(
        self, member_id: int, *, timeout: float | None = None
    ) -> rpc_pb2.MemberPromoteResponse:
        request = rpc_pb2.MemberPromoteRequest(ID=member_id)
        return await self._call("Cluster", "MemberPromote", request, timeout=timeout, repeatable=False)

    # ---- Lease ----
    async def lease_grant(
        self, request: rpc_pb2.LeaseGrantRequest, *, timeout: float | None = None
    ) -> rpc_pb2.LeaseGrantResponse:
        return await self._call("Lease", "LeaseGrant", request, timeout=timeout, repeatable=True)

    async def lease_revoke(
        self, request: rpc_pb2.LeaseRevokeRequest, *, timeout: float | None = None
    ) -> rpc_pb2.LeaseRevokeResponse:
        return await self._call("Lease", "LeaseRevoke", request, timeout=timeout, repeatable=True)

    async def lease_time_to_live(
        self, request: rpc_pb2.LeaseTimeToLiveRequest, *, timeout: float | None = None
    ) -> rpc_pb2.LeaseTimeToLiveResponse:
        return await self._call("Lease", "LeaseTimeToLive", request, timeout=timeout, repeatable=True)

    async def lease_leases(self, *, timeout: float | None = None) -> rpc_pb2.LeaseLeasesResponse:
        return await self._call(
            "Lease", "LeaseLeases", rpc_pb2.LeaseLeasesRequest(), timeout=timeout, repeatable=True
        )

    async def lease_keep_alive_once(
        self, lease_id: int, *, timeout: float | None = None
    ) -> rpc_pb2.LeaseKeepAliveResponse:
        """One keep-alive round trip; a lease that is gone answers TTL <= 0 (raised as LEASE_NOT_FOUND)."""
        async for response in self._keep_alive_stream(lease_id, once=True, timeout=timeout):
            return response
        raise etcd_errors.LEASE_NOT_FOUND()

    def lease_keep_alive(self, lease_id: int) -> AsyncIterator[rpc_pb2.LeaseKeepAliveResponse]:
        """Keep ``lease_id`` alive until it expires or is revoked, yielding every response.

        Like clientv3, the next keep-alive goes out a third of the TTL after each response; the
        iteration ends after the response that reports the lease gone (TTL <= 0).
        """
        return self._keep_alive_stream(lease_id, once=False, timeout=None)

    async def _keep_alive_stream(
        self, lease_id: int, *, once: bool, timeout: float | None
    ) -> AsyncIterator[rpc_pb2.LeaseKeepAliveResponse]:
        loop = asyncio.get_running_loop()
        remaining = timeout
        conn = await self._ready_connection(None, remaining)
        if conn is None:
            raise DeadlineExceeded()
        metadata = await self._metadata(conn, self.dial_timeout)
        call = conn.stub("Lease").LeaseKeepAlive(timeout=timeout, metadata=metadata)
        try:
            while True:
                await call.write(rpc_pb2.LeaseKeepAliveRequest(ID=lease_id))
                response = await call.read()
                if response is grpc.aio.EOF:  # type: ignore[attr-defined]
                    return
                if once and response.TTL <= 0:
                    raise etcd_errors.LEASE_NOT_FOUND()
                yield response
                if once or response.TTL <= 0:
                    return
                started = loop.time()
                await asyncio.sleep(max(0.5, response.TTL / 3.0) - (loop.time() - started))
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise DeadlineExceeded() from None
            raise _translate(err, etcd_errors.from_rpc_error(err)) from None
        finally:
            call.cancel()

    # ---- Auth ----
    _AUTH_READS = frozenset({"UserGet", "UserList", "RoleGet", "RoleList"})

    async def auth(self, method: str, request: Any, *, timeout: float | None = None) -> Any:
        """Call Auth.<method> (``UserAdd``, ``RoleGrantPermission``, ``AuthEnable``, ...)."""
        return await self._call(
            "Auth", method, request, timeout=timeout, repeatable=method in self._AUTH_READS
        )

    # ---- Watch ----
    async def watch_session(self, *, require_leader: bool = True) -> WatchSession:
        """A Watch call on which many watchers can be created (close it when done).

        ``require_leader`` sends clientv3's ``hasleader`` metadata so that a member without a
        leader cancels the watch instead of leaving it silent.
        """
        conn = await self._ready_connection(None, None)
        while conn is None:
            await asyncio.sleep(RETRY_BACKOFF)
            conn = await self._ready_connection(None, None)
        metadata = list(await self._metadata(conn, self.dial_timeout) or [])
        if require_leader:
            metadata.append(("hasleader", "true"))
        call = conn.stub("Watch").Watch(metadata=metadata)
        return WatchSession(call, lambda err: _translate(err, etcd_errors.from_rpc_error(err)))

    async def watch(
        self, request: rpc_pb2.WatchCreateRequest, *, require_leader: bool = True
    ) -> AsyncIterator[rpc_pb2.WatchResponse]:
        """Watch one key range on a call of its own; yields every response (fragments joined) until
        it is canceled."""
        session = await self.watch_session(require_leader=require_leader)
        try:
            async for response in await session.create(request):
                yield response
        finally:
            await session.close()

    # ---- Election and Lock (the server runs etcd's concurrency recipes) ----
    async def campaign(
        self, name: bytes, lease: int, value: bytes, *, timeout: float | None = None
    ) -> v3election_pb2.CampaignResponse:
        """Wait until elected; cancelling the call withdraws the candidacy (the server resigns)."""
        request = v3election_pb2.CampaignRequest(name=name, lease=lease, value=value)
        return await self._call("Election", "Campaign", request, timeout=timeout, repeatable=False)

    async def proclaim(
        self, leader: v3election_pb2.LeaderKey, value: bytes, *, timeout: float | None = None
    ) -> v3election_pb2.ProclaimResponse:
        request = v3election_pb2.ProclaimRequest(leader=leader, value=value)
        return await self._call("Election", "Proclaim", request, timeout=timeout, repeatable=False)

    async def resign(
        self, leader: v3election_pb2.LeaderKey, *, timeout: float | None = None
    ) -> v3election_pb2.ResignResponse:
        request = v3election_pb2.ResignRequest(leader=leader)
        return await self._call("Election", "Resign", request, timeout=timeout, repeatable=False)

    async def leader(self, name: bytes, *, timeout: float | None = None) -> v3election_pb2.LeaderResponse:
        request = v3election_pb2.LeaderRequest(name=name)
        return await self._call("Election", "Leader", request, timeout=timeout, repeatable=True)

    async def observe(self, name: bytes) -> AsyncIterator[v3election_pb2.LeaderResponse]:
        """Every leader of the election in turn and every value it proclaims, until the server ends
        the stream."""
        conn = await self._ready_connection(None, None)
        if conn is None:
            raise DeadlineExceeded()
        metadata = await self._metadata(conn, self.dial_timeout)
        call = conn.stub("Election").Observe(v3election_pb2.LeaderRequest(name=name), metadata=metadata)
        try:
            async for response in call:
                yield response
        except grpc.aio.AioRpcError as err:
            raise _translate(err, etcd_errors.from_rpc_error(err)) from None
        finally:
            call.cancel()

    async def lock(self, name: bytes, lease: int, *, timeout: float | None = None) -> v3lock_pb2.LockResponse:
        """Wait until the lock is held; cancelling the call gives up the place in the queue."""
        request = v3lock_pb2.LockRequest(name=name, lease=lease)
        return await self._call("Lock", "Lock", request, timeout=timeout, repeatable=False)

    async def unlock(self, key: bytes, *, timeout: float | None = None) -> v3lock_pb2.UnlockResponse:
        request = v3lock_pb2.UnlockRequest(key=key)
        return await self._call("Lock", "Unlock", request, timeout=timeout, repeatable=False)

    # ---- raw access (the gRPC proxy forwards bytes on the client's channels) ----
    async def channel(self, timeout: float | None = None) -> grpc.aio.Channel:
        """A connected channel to the current endpoint, or to whichever endpoint connects first;
        retried until ``timeout`` (forever when None), then DeadlineExceeded."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                raise DeadlineExceeded()
            conn = await self._ready_connection(None, remaining)
            if conn is not None:
                return conn.channel
            await asyncio.sleep(RETRY_BACKOFF)

    def fail_over(self) -> None:
        """The current endpoint failed a call: the next `channel` prefers another one."""
        self._rotate(None)

    async def set_endpoints(self, endpoints: Sequence[str]) -> None:
        """Replace the endpoint list (auto-sync); channels to endpoints no longer listed are closed."""
        new = [Endpoint.parse(e) for e in endpoints]
        if not new or [e.raw for e in new] == [e.raw for e in self.endpoints]:
            return
        current = self.endpoints[self._current % len(self.endpoints)].raw if self.endpoints else None
        self.endpoints = new
        raws = [e.raw for e in new]
        self._current = raws.index(current) if current in raws else 0
        for raw in [r for r in self._connections if r not in raws]:
            await self._connections.pop(raw).channel.close(None)

    # ---- plumbing ----
    def _connection(self, endpoint: Endpoint) -> _Connection:
        conn = self._connections.get(endpoint.raw)
        if conn is None:
            conn = self._connections[endpoint.raw] = _Connection(endpoint, self._options, self._tls)
        return conn

    def _pick(self, pinned: str | None) -> Endpoint:
        if pinned is not None:
            for endpoint in self.endpoints:
                if endpoint.raw == pinned:
                    return endpoint
            return Endpoint.parse(pinned)
        if not self.endpoints:
            raise NoEndpoints()
        return self.endpoints[self._current % len(self.endpoints)]

    async def _ready_connection(self, pinned: str | None, remaining: float | None) -> _Connection | None:
        """A connected channel: the current endpoint if it is up, else whichever connects first.

        Every endpoint is dialled at once (as a round-robin balancer would), so a dead first
        endpoint costs nothing when another is alive. None when none connects within the dial
        timeout (or what is left of the caller's deadline).
        """
        wait = self.dial_timeout if remaining is None else min(remaining, self.dial_timeout)
        if pinned is not None:
            conn = self._connection(self._pick(pinned))
            return conn if await conn.ready(wait) else None
        if not self.endpoints:
            raise NoEndpoints()
        count = len(self.endpoints)
        order = [self.endpoints[(self._current + i) % count] for i in range(count)]
        conns = [self._connection(e) for e in order]
        for conn in conns:
            if conn.channel.get_state(try_to_connect=True) == grpc.ChannelConnectivity.READY:
                self._current = self.endpoints.index(conn.endpoint)
                return conn
        waiters = {asyncio.ensure_future(conn.channel.channel_ready()): conn for conn in conns}
        done, pending = await asyncio.wait(waiters, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        for task in done:
            conn = waiters[task]
            self._current = self.endpoints.index(conn.endpoint)
            return conn
        return None

    def _rotate(self, pinned: str | None) -> None:
        if pinned is None and self.endpoints:
            self._current = (self._current + 1) % len(self.endpoints)

    def _report(
        self, endpoint: Endpoint, method: str, attempt: int, code: grpc.StatusCode, details: str, pinned: bool
    ) -> None:
        if self._on_call_failed is not None:
            self._on_call_failed(CallFailure(endpoint.raw, method, attempt, code, details, pinned))

    async def _metadata(self, conn: _Connection, timeout: float) -> list[tuple[str, str]] | None:
        """The auth token metadata, authenticating first when a user is configured.

        Failures are reported against the client's own target, not a pinned endpoint: clientv3
        authenticates once, when the client connects."""
        if self._username is None:
            return None
        if self._token is None:
            request = rpc_pb2.AuthenticateRequest(name=self._username, password=self._password or "")
            try:
                response = await conn.stub("Auth").Authenticate(request, timeout=timeout)
            except grpc.aio.AioRpcError as err:
                self._report(conn.endpoint, "Authenticate", 0, err.code(), err.details() or "", pinned=False)
                etcd = etcd_errors.from_rpc_error(err)
                if etcd is not None and isinstance(etcd, etcd_errors.AUTH_NOT_ENABLED):
                    self._username = None
                    return None
                raise AuthenticationError(_translate(err, etcd)) from None
            self._token = response.token
        return [("token", self._token)]

    async def _call(
        self,
        service: str,
        method: str,
        request: Any,
        *,
        timeout: float | None,
        repeatable: bool,
        endpoint: str | None = None,
    ) -> Any:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        attempt = 0
        refreshed_token = False
        last_error: Exception | None = None
        while True:
            target = self._pick(endpoint)
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                raise _deadline_error(target, method, attempt, self, last_error, endpoint is not None)
            conn = await self._ready_connection(endpoint, remaining)
            if conn is None:
                last_error = ClientError(grpc.StatusCode.UNAVAILABLE, "all SubConns are in TransientFailure")
                await asyncio.sleep(RETRY_BACKOFF)
                continue
            target = conn.endpoint
            try:
                remaining = None if deadline is None else max(0.0, deadline - loop.time())
                metadata = await self._metadata(
                    conn, remaining if remaining is not None else self.dial_timeout
                )
                return await getattr(conn.stub(service), method)(
                    request, timeout=remaining, metadata=metadata
                )
            except grpc.aio.AioRpcError as err:
                code, details = err.code(), err.details() or ""
                if code == grpc.StatusCode.DEADLINE_EXCEEDED and details == "Deadline Exceeded":
                    details = "context deadline exceeded"  # our own deadline, in grpc-go's words
                self._report(target, method, attempt, code, details, endpoint is not None)
                attempt += 1
                etcd = etcd_errors.from_rpc_error(err)
                if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise DeadlineExceeded() from None
                if isinstance(etcd, etcd_errors.INVALID_AUTH_TOKEN) and not refreshed_token:
                    self._token = None
                    refreshed_token = True
                    continue
                if code == grpc.StatusCode.UNAVAILABLE and repeatable and attempt < MAX_ATTEMPTS:
                    last_error = _translate(err, etcd)
                    self._rotate(endpoint)
                    await asyncio.sleep(RETRY_BACKOFF)
                    continue
                raise _translate(err, etcd) from None


def _translate(err: grpc.aio.AioRpcError, etcd: etcd_errors.EtcdError | None) -> Exception:
    if etcd is not None:
        return etcd
    return ClientError(err.code(), err.details() or "")


def _deadline_error(
    target: Endpoint, method: str, attempt: int, client: Client, last_error: Exception | None, pinned: bool
) -> Exception:
    """The deadline passed: report it like grpc-go's balancer does, then fail with it."""
    if isinstance(last_error, ClientError) and last_error.code == grpc.StatusCode.UNAVAILABLE:
        details = "latest balancer error: " + last_error.details
        if "TransientFailure" not in last_error.details:
            details = last_error.details
        client._report(target, method, attempt, grpc.StatusCode.DEADLINE_EXCEEDED, details, pinned)
    return DeadlineExceeded()
