"""``lock`` and ``elect``, as etcdctl 3.4 runs them.

etcdctl runs the concurrency recipes itself; quorumctl asks the server's Lock and Election services,
which run the same recipes (etcd serves them too), so keys, revisions and output are the same. Like
etcdctl, each command holds a session: a lease (``--ttl`` for lock, 60 s for elect) kept alive in the
background. SIGINT/SIGTERM while waiting cancels the request (the server withdraws the key) and fails
with "context canceled"; once held, it releases (unlock / resign) and exits 0. A session whose lease is
lost ends the command with "session expired".
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

from cluster.api import errors as etcd_errors
from cluster.api.gen.etcdserverpb import rpc_pb2
from cluster.client import Client
from cluster.ctl.cobra import Command
from cluster.ctl.exits import EXIT_BAD_ARGS, EXIT_ERROR, CtlExit
from cluster.ctl.flags import FlagSpec
from cluster.ctl.go_exec import ExecError, child_environ, run_command
from cluster.ctl.session import Runner, Session

DEFAULT_SESSION_TTL = 60
LOCK_FLAGS = (FlagSpec("ttl", "int", 10, "timeout for session"),)
ELECT_FLAGS = (FlagSpec("listen", "bool", False, "observation mode", "l"),)
KEEP_ALIVE_RETRY_S = 0.5
_T = TypeVar("_T")


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived while a request was waiting (Go's context.Canceled)."""


@contextlib.asynccontextmanager
async def stop_signals() -> AsyncIterator[asyncio.Event]:
    """An event set by SIGINT or SIGTERM while the block runs (etcdctl's signal.Notify)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        yield stop
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def unless_stopped(work: Awaitable[_T], stop: asyncio.Event) -> _T:
    """Await ``work``; if ``stop`` is set first, cancel it and raise Interrupted."""
    task = asyncio.ensure_future(work)
    waiter = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    raise Interrupted()


class LeaseSession:
    """concurrency.Session: a lease kept alive until orphaned; ``done`` once it is lost (revoked,
    expired, or no keep-alive answered within its TTL)."""

    def __init__(self, client: Client, lease: int, ttl: int) -> None:
        self.lease = lease
        self.done = asyncio.Event()
        self._client = client
        self._ttl = ttl
        self._task = asyncio.create_task(self._keep_alive(), name="session-keep-alive")

    @classmethod
    async def open(cls, client: Client, ttl: int) -> LeaseSession:
        ttl = ttl if ttl > 0 else DEFAULT_SESSION_TTL
        granted = await client.lease_grant(rpc_pb2.LeaseGrantRequest(TTL=ttl))
        return cls(client, granted.ID, ttl)

    async def _keep_alive(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._ttl) as deadline:
                while True:
                    try:
                        async for resp in self._client.lease_keep_alive(self.lease):
                            if resp.TTL <= 0:
                                return
                            deadline.reschedule(loop.time() + resp.TTL)
                    except etcd_errors.LEASE_NOT_FOUND:
                        return
                    except Exception:  # a broken stream: clientv3 retries until the deadline
                        pass
                    await asyncio.sleep(KEEP_ALIVE_RETRY_S)
        except TimeoutError:
            return
        finally:
            self.done.set()

    def orphan(self) -> None:
        self._task.cancel()


async def run_lock(s: Session) -> None:
    args = s.inv.args
    if not args:
        raise CtlExit(EXIT_BAD_ARGS, "lock takes a lock name argument and an optional command to execute")
    client = s.client()
    try:
        async with stop_signals() as stop:
            session = await LeaseSession.open(client, int(s.inv.flags.get("ttl")))  # type: ignore[call-overload]
            try:
                await _hold_lock(s, client, session, stop)
            finally:
                session.orphan()
    finally:
        await client.close()


async def _hold_lock(s: Session, client: Client, session: LeaseSession, stop: asyncio.Event) -> None:
    name, command = s.inv.args[0], s.inv.args[1:]
    try:
        held = await unless_stopped(client.lock(name.encode("utf-8", "surrogateescape"), session.lease), stop)
    except Interrupted:
        raise CtlExit(EXIT_ERROR, "context canceled") from None
    if command:
        extra = [("ETCD_LOCK_KEY", held.key.decode("utf-8", "surrogateescape")),
                 ("ETCD_LOCK_REV", str(held.header.revision))]
        failure: ExecError | None = None
        try:
            await run_command(command, child_environ(s.environ, extra, first=True), s.stdout, s.stderr)
        except ExecError as err:
            failure = err
        await client.unlock(held.key)
        if failure is not None:
            raise CtlExit(EXIT_ERROR, str(failure))
        return
    got = await client.range(rpc_pb2.RangeRequest(key=held.key))
    if not got.kvs:
        raise CtlExit(EXIT_ERROR, "lock lost on init")
    assert s.printer is not None
    s.printer.get(got)
    s.stdout.flush()
    if await _stopped_before_lost(stop, session):
        await client.unlock(held.key)
        return
    raise CtlExit(EXIT_ERROR, "session expired")


async def _stopped_before_lost(stop: asyncio.Event, session: LeaseSession) -> bool:
    """Wait for a signal or the end of the session; True if the signal came."""
    try:
        await unless_stopped(session.done.wait(), stop)
    except Interrupted:
        return True
    return False


async def run_elect(s: Session) -> None:
    args = s.inv.args
    if len(args) not in (1, 2):
        raise CtlExit(
            EXIT_BAD_ARGS, "elect takes one election name argument and an optional proposal argument"
        )
    client = s.client()
    listen = bool(s.inv.flags.get("listen"))
    try:
        if len(args) == 1 and not listen:
            raise CtlExit(EXIT_BAD_ARGS, "no proposal argument but -l not set")
        if len(args) == 2 and listen:
            raise CtlExit(EXIT_BAD_ARGS, "proposal given but -l is set")
        async with stop_signals() as stop:
            session = await LeaseSession.open(client, DEFAULT_SESSION_TTL)
            try:
                name, *proposal = (arg.encode("utf-8", "surrogateescape") for arg in args)
                if listen:
                    await _observe(s, client, name, stop)
                else:
                    await _campaign(s, client, name, proposal[0], session, stop)
            finally:
                session.orphan()
    finally:
        await client.close()


async def _observe(s: Session, client: Client, name: bytes, stop: asyncio.Event) -> None:
    async def show_leaders() -> None:
        assert s.printer is not None
        with contextlib.suppress(etcd_errors.EtcdError, Exception):
            async for resp in client.observe(name):
                s.printer.get(rpc_pb2.RangeResponse(header=resp.header, kvs=[resp.kv]))
                s.stdout.flush()

    try:
        await unless_stopped(show_leaders(), stop)
    except Interrupted:
        return
    raise CtlExit(EXIT_ERROR, "elect: observer lost")


async def _campaign(
    s: Session, client: Client, name: bytes, proposal: bytes, session: LeaseSession, stop: asyncio.Event
) -> None:
    try:
        elected = await unless_stopped(client.campaign(name, session.lease, proposal), stop)
    except Interrupted:
        raise CtlExit(EXIT_ERROR, "context canceled") from None
    got = await client.range(rpc_pb2.RangeRequest(key=elected.leader.key))
    assert s.printer is not None
    s.printer.get(got)
    s.stdout.flush()
    if not await _stopped_before_lost(stop, session):
        raise CtlExit(EXIT_ERROR, "elect: session expired")
    await client.resign(elected.leader)


def concurrency_commands(runner: Runner) -> list[Command]:
    return [
        Command("lock", "lock <lockname> [exec-command arg1 arg2 ...]", "Acquires a named lock",
                flags=LOCK_FLAGS, run=runner(run_lock)),
        Command("elect", "elect <election-name> [proposal]", "Observes and participates in leader election",
                flags=ELECT_FLAGS, run=runner(run_elect)),
    ]
