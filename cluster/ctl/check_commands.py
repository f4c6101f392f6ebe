"""check perf and check datascale, as etcdctl 3.4 runs them (etcdctl/ctlv3/command/check.go).

Both refuse to run when the prefix already holds keys, write through one client per simulated
client, delete the prefix afterwards (optionally compacting and defragmenting) and print etcdctl's
lines; the statistics and verdicts are in check_report.py.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable

import httpx

from cluster.api.gen.etcdserverpb import rpc_pb2
from cluster.api.keys import prefix_end
from cluster.client import Client
from cluster.ctl.check_report import (
    DATASCALE_LOADS,
    LOAD_ALIASES,
    PERF_LOADS,
    LatencyReport,
    datascale_verdict,
    perf_verdict,
    random_key,
    resident_memory,
)
from cluster.ctl.cobra import Command
from cluster.ctl.exits import EXIT_BAD_FEATURE, EXIT_ERROR, EXIT_INVALID_INPUT, CtlExit
from cluster.ctl.flags import FlagSpec
from cluster.ctl.progress_bar import ProgressBar
from cluster.ctl.session import Runner, Session

LOAD_USAGE = "workload model. Accepted workloads: s(small), m(medium), l(large), xl(xLarge)"
MAINTENANCE_FLAGS = (
    FlagSpec("auto-compact", "bool", False, "Compact storage with last revision after test is finished."),
    FlagSpec("auto-defrag", "bool", False, "Defragment storage after test is finished."),
)
PERF_FLAGS = (
    FlagSpec("load", "string", "s", f"The performance check's {LOAD_USAGE}"),
    FlagSpec(
        "prefix", "string", "/etcdctl-check-perf/", "The prefix for writing the performance check's keys."
    ),
    *MAINTENANCE_FLAGS,
)
DATASCALE_FLAGS = (
    FlagSpec("load", "string", "s", f"The datascale check's {LOAD_USAGE}"),
    FlagSpec(
        "prefix", "string", "/etcdctl-check-datascale/", "The prefix for writing the datascale check's keys."
    ),
    *MAINTENANCE_FLAGS,
)
MAINTENANCE_TIMEOUT = 30.0
PERF_KEY_SIZE, PERF_VALUE_SIZE = 256, 1024
DATASCALE_KEY_SIZE, DATASCALE_VALUE_SIZE = 512, 512


def _model(s: Session) -> str:
    load = str(s.flag("load"))
    if load not in LOAD_ALIASES:
        raise CtlExit(EXIT_BAD_FEATURE, f"unknown load option {load}")
    return LOAD_ALIASES[load]


def _clients(s: Session, count: int) -> list[Client]:
    """``count`` clients with the command's configuration (etcdctl's mustClient per simulated client)."""
    s.apply_env()
    s.debug_dump()
    endpoints, tls = s.endpoints(), s.tls()
    user, password = s.credentials()
    if s.printer is None:
        s.init_display()
    return [s.new_client(endpoints, tls, user, password) for _ in range(count)]


async def _refuse_used_prefix(client: Client, prefix: str, timeout: float | None) -> None:
    key = prefix.encode()
    response = await client.range(
        rpc_pb2.RangeRequest(key=key, range_end=prefix_end(key), limit=1), timeout=timeout
    )
    if response.kvs:
        raise CtlExit(
            EXIT_INVALID_INPUT,
            f'prefix "{prefix}" has keys. Delete with etcdctl del --prefix {prefix} first',
        )


async def _run_puts(
    clients: list[Client],
    produce: Callable[[asyncio.Queue[rpc_pb2.PutRequest | None]], Awaitable[None]],
    report: LatencyReport,
    on_done: Callable[[], None] = lambda: None,
) -> None:
    """One worker per client takes puts off a queue as long as ``produce`` feeds it."""
    queue: asyncio.Queue[rpc_pb2.PutRequest | None] = asyncio.Queue(maxsize=len(clients))

    async def worker(client: Client) -> None:
        while (request := await queue.get()) is not None:
            started = time.perf_counter()
            try:
                await client.put(request)
                report.record(time.perf_counter() - started)
            except Exception as err:
                report.record(time.perf_counter() - started, str(err))
            on_done()

    async def feed() -> None:
        await produce(queue)
        for _ in clients:
            await queue.put(None)

    report.start(time.perf_counter())
    await asyncio.gather(feed(), *(worker(c) for c in clients))


async def _clean_up(s: Session, client: Client, prefix: str, timeout: float | None) -> None:
    """Delete the check's keys, then compact and defragment if asked (etcdctl's compact/defrag)."""
    key = prefix.encode()
    deleted = await client.delete_range(
        rpc_pb2.DeleteRangeRequest(key=key, range_end=prefix_end(key)), timeout=timeout
    )
    if s.flag("auto-compact"):
        revision = deleted.header.revision
        s.out(f"Compacting with revision {revision}\n")
        await client.compact(
            rpc_pb2.CompactionRequest(revision=revision, physical=True), timeout=MAINTENANCE_TIMEOUT
        )
        s.out(f"Compacted with revision {revision}\n")
    if s.flag("auto-defrag"):
        for endpoint in s.endpoints():
            s.out(f'Defragmenting "{endpoint}"\n')
            await client.defragment(endpoint=endpoint, timeout=MAINTENANCE_TIMEOUT)
            s.out(f'Defragmented "{endpoint}"\n')


async def _close_all(clients: list[Client]) -> None:
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


async def run_check_perf(s: Session) -> None:
    load = PERF_LOADS[_model(s)]
    prefix = str(s.flag("prefix"))
    clients = _clients(s, load.clients)
    try:
        await _refuse_used_prefix(clients[0], prefix, float(load.duration))
        value = bytes(PERF_VALUE_SIZE)
        rng = random.Random()
        bar = ProgressBar(load.duration, s.stdout)
        bar.start()

        async def produce(queue: asyncio.Queue[rpc_pb2.PutRequest | None]) -> None:
            """Go's rate.Limiter(limit, burst 1) until the load's duration is up: each put waits one
            interval after the previous one, or not at all if the queue held it back longer; a put
            that could only start after the deadline is not made (limiter.Wait's context error)."""
            interval = 1.0 / load.limit
            deadline = time.monotonic() + load.duration
            last = -math.inf
            while (send_at := max(last + interval, time.monotonic())) <= deadline:
                await asyncio.sleep(send_at - time.monotonic())
                key = random_key(prefix.encode(), PERF_KEY_SIZE, rng)
                await queue.put(rpc_pb2.PutRequest(key=key, value=value))
                last = send_at

        async def tick() -> None:
            for _ in range(load.duration):
                await asyncio.sleep(1)
                bar.add(1)
            bar.finish()

        report = LatencyReport()
        ticker = asyncio.get_running_loop().create_task(tick())
        await _run_puts(clients, produce, report)
        stats = report.finish(time.perf_counter())
        await ticker
        await _clean_up(s, clients[0], prefix, MAINTENANCE_TIMEOUT)
    finally:
        await _close_all(clients)
    lines, ok = perf_verdict(stats, load.limit)
    s.out("".join(line + "\n" for line in lines))
    if not ok:
        raise CtlExit(EXIT_ERROR, None)


async def _memory_bytes(s: Session, endpoint: str) -> float:
    """process_resident_memory_bytes from the endpoint's /metrics; 0 (after etcdctl's message) if not."""
    host = endpoint if endpoint.startswith(("http://", "https://")) else "http://" + endpoint
    url = host + "/metrics"
    cert = None
    if host.startswith("https://"):
        cert = (str(s.flag("cert")), str(s.flag("key")))
    verify = not s.flag("insecure-skip-tls-verify") and (str(s.flag("cacert")) or True)
    try:
        async with httpx.AsyncClient(cert=cert, verify=verify, timeout=None) as http:
            response = await http.get(url)
            text = response.text
    except Exception as err:
        s.out(f"fetch error: {err}\n")
        return 0.0
    value = resident_memory(text)
    if value is None:
        s.out("could not find: process_resident_memory_bytes\n")
        return 0.0
    return value


async def run_check_datascale(s: Session) -> None:
    load = DATASCALE_LOADS[_model(s)]
    prefix = str(s.flag("prefix"))
    clients = _clients(s, load.clients)
    try:
        endpoint = s.endpoints()[0]
        await _refuse_used_prefix(clients[0], prefix, None)
        before = await _memory_bytes(s, endpoint)
        if before == 0:
            s.out("FAIL: Could not read process_resident_memory_bytes before the put operations.\n")
            raise CtlExit(EXIT_ERROR, None)
        s.out(
            f"Start data scale check for work load [{load.limit} key-value pairs, {load.kv_size} bytes "
            f"per key-value, {load.clients} concurrent clients].\n"
        )
        bar = ProgressBar(load.limit, s.stdout)
        bar.start()
        value = bytes(DATASCALE_VALUE_SIZE)
        rng = random.Random()

        async def produce(queue: asyncio.Queue[rpc_pb2.PutRequest | None]) -> None:
            for _ in range(load.limit):
                key = random_key(prefix.encode(), DATASCALE_KEY_SIZE, rng)
                await queue.put(rpc_pb2.PutRequest(key=key, value=value))

        report = LatencyReport()
        await _run_puts(clients, produce, report, on_done=bar.add)
        bar.finish()
        stats = report.finish(time.perf_counter())
        after = await _memory_bytes(s, endpoint)
        if after == 0:
            s.out("FAIL: Could not read process_resident_memory_bytes after the put operations.\n")
            raise CtlExit(EXIT_ERROR, None)
        await _clean_up(s, clients[0], prefix, None)
    finally:
        await _close_all(clients)
    lines, ok = datascale_verdict(stats, before, after)
    s.out("".join(line + "\n" for line in lines))
    if not ok:
        raise CtlExit(EXIT_ERROR, None)


def check_commands(runner: Runner) -> list[Command]:
    return [
        Command(
            "perf", "perf [options]", "Check the performance of the etcd cluster",
            flags=PERF_FLAGS, run=runner(run_check_perf),
        ),
        Command(
            "datascale",
            "datascale [options]",
            "Check the memory usage of holding data for different workloads on a given server endpoint.",
            long="If no endpoint is provided, localhost will be used. If multiple endpoints are provided, "
            "first endpoint will be used.",
            flags=DATASCALE_FLAGS,
            run=runner(run_check_datascale),
        ),
    ]
