"""One chaos run: start a proxied three-member cluster, drive the workload and watchers while faults are
injected, heal, read the final state, then check the history and print a verdict.

Bounded in time at every step (the workload for ``duration`` seconds, each request by its deadline,
recovery and the watchers' catch-up by fixed limits, the search by its budget), and the cluster is closed
whatever happens. Reports (history, fault log, checker reports, member logs) are kept in the report
directory when the run fails or a directory was asked for.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from cluster.testing.chaos import archive
from cluster.testing.chaos.cluster import ChaosCluster, start_cluster
from cluster.testing.chaos.faults import FaultInjector
from cluster.testing.chaos.front import start_front
from cluster.testing.chaos.history import (
    History,
    LeaseGrant,
    LeaseKeepAlive,
    LeaseRevoke,
    Put,
    Range,
    Response,
    WatchStream,
)
from cluster.testing.chaos.linearizability import check_history
from cluster.testing.chaos.serializable import check_serializable
from cluster.testing.chaos.watchcheck import check_watches
from cluster.testing.chaos.watchers import LogicalWatch
from cluster.testing.chaos.workload import Channels, KvClient, WorkloadConfig, perform
from cluster.testing.procs import NodeProcess

RECOVERY_TIMEOUT = 60.0
CATCH_UP_TIMEOUT = 20.0
DISK_MB = 192
"""Per-member tmpfs for the diskfull fault: room for one preallocated 64 MiB WAL segment and the rest."""


@dataclass(frozen=True, slots=True)
class RunConfig:
    seed: int
    duration: float = 15.0
    faults: tuple[str, ...] = ("kill", "pause", "partition", "compact", "defrag")
    target: str = "quorum"
    report_dir: Path | None = None
    workload: WorkloadConfig = field(default_factory=WorkloadConfig)
    search_budget: float = 60.0
    front: str = ""
    """"gateway" or "grpcproxy": half the clients and two watches go through it (front.py)."""


@dataclass
class Verdict:
    ok: bool | None
    """True: no violation; False: a violation; None: inconclusive (the search budget ran out)."""
    summary: list[str] = field(default_factory=list)
    report_dir: Path | None = None
    history: History | None = None
    """The recorded history (with its watch streams), for callers that want to look further."""

    def text(self) -> str:
        head = {True: "PASS", False: "VIOLATION", None: "INCONCLUSIVE"}[self.ok]
        where = f"\nreports: {self.report_dir}" if self.report_dir else ""
        return f"{head}\n" + "\n".join(f"  {line}" for line in self.summary) + where


def run(config: RunConfig) -> Verdict:
    """Run once and return the verdict (the cluster is always closed)."""
    report_dir = config.report_dir or Path(tempfile.mkdtemp(prefix=f"chaos-{config.target}-{config.seed}-"))
    report_dir.mkdir(parents=True, exist_ok=True)
    flags = ("--snapshot-count=200",)  # snapshots and log compaction happen during short runs too
    disk_mb = DISK_MB if "diskfull" in config.faults else None
    cluster = start_cluster(config.target, *flags, disk_mb=disk_mb)
    front: NodeProcess | None = None
    try:
        if config.front:
            front = start_front(config.front, config.target, cluster.endpoints)
        verdict = asyncio.run(_drive(cluster, front, config, report_dir))
        if verdict.ok is not True:
            for m in [*cluster.members, *([front] if front else [])]:
                (report_dir / f"{m.name}.log").write_text(m.logs())
    finally:
        if front is not None:
            front.close()
        cluster.close()
    if verdict.ok is True and config.report_dir is None:
        shutil.rmtree(report_dir, ignore_errors=True)
    else:
        verdict.report_dir = report_dir
    return verdict


def _watches(cfg: WorkloadConfig, endpoints: list[str], fronted: list[str]) -> list[LogicalWatch]:
    """The whole-keyspace watch from rev 1 (the reference for the committed history) goes straight to
    the members; the two others through the front, if there is one (``fronted``)."""
    start, end = cfg.keyspace
    return [
        LogicalWatch(0, start, end, True, 1, endpoints),
        LogicalWatch(1, cfg.key(0), b"", True, 1, fronted),
        LogicalWatch(2, cfg.key(0), cfg.key(3), False, 1, fronted),
    ]


async def _until_ok(
    history: History, channels: Channels, request: Put | Range, deadline: float
) -> Response | None:
    """Repeat ``request`` (recording every try) until it succeeds or the deadline passes. A Put's
    value gets the attempt number: values must stay unique, an unknown attempt may still apply."""
    attempt = 0
    while time.monotonic() < deadline:
        attempt += 1
        if isinstance(request, Put):
            request = Put(request.key, request.value.split(b"#")[0] + b"#%d" % attempt)
        resp = await perform(history, channels, 99, request, 5.0)
        if resp is not None:
            return resp
        await asyncio.sleep(0.2)
    return None


async def _late_watch(
    history: History, cfg: WorkloadConfig, endpoints: list[str], delay: float, stop: asyncio.Event
) -> LogicalWatch | None:
    """A watcher created mid-run some revisions back: exercises catching up from history."""
    try:
        await asyncio.wait_for(stop.wait(), delay)
        return None
    except TimeoutError:
        pass
    channels = Channels(endpoints, 1)
    try:
        resp = await _until_ok(history, channels, Range(cfg.key(1)), time.monotonic() + 5)
    finally:
        await channels.close()
    if resp is None:
        return None
    start, end = cfg.keyspace
    return LogicalWatch(3, start, end, True, max(1, resp.revision - 20), endpoints)


async def _drive(
    cluster: ChaosCluster, front: NodeProcess | None, config: RunConfig, report_dir: Path
) -> Verdict:
    cfg, history, endpoints = config.workload, History(), cluster.endpoints
    fronted = [front.endpoint] if front is not None else endpoints
    stop_clients, stop_faults, stop_watches = asyncio.Event(), asyncio.Event(), asyncio.Event()
    watches = _watches(cfg, endpoints, fronted)
    watch_tasks = [asyncio.create_task(w.run(stop_watches)) for w in watches]
    clients = [
        KvClient(i, fronted, history, config.seed, cfg, fronted=True)
        if front is not None and i % 2 == 0
        else KvClient(i, endpoints, history, config.seed, cfg)
        for i in range(cfg.clients)
    ]
    client_tasks = [asyncio.create_task(c.run(stop_clients)) for c in clients]
    client_tasks += [asyncio.create_task(c.keep_alive(stop_clients)) for c in clients if cfg.leases]
    injector = FaultInjector(cluster, config.seed, config.faults, history)
    fault_task = asyncio.create_task(injector.run(stop_faults))
    late = await _late_watch(history, cfg, endpoints, config.duration / 3, stop_clients)
    if late is not None:
        watches.append(late)
        watch_tasks.append(asyncio.create_task(late.run(stop_watches)))
    await asyncio.sleep(max(0.0, config.duration * 2 / 3))
    stop_faults.set()
    await fault_task
    await asyncio.to_thread(injector.heal_all)
    stop_clients.set()
    await asyncio.wait_for(asyncio.gather(*client_tasks), cfg.op_timeout + 10)

    problems: list[str] = list(injector.errors)
    channels = Channels(endpoints, 0)
    deadline = time.monotonic() + RECOVERY_TIMEOUT
    marker = await _until_ok(history, channels, Put(cfg.key(0), b"marker-end"), deadline)
    final = await _until_ok(history, channels, Range(*cfg.keyspace), deadline)
    await channels.close()
    if marker is None or final is None:
        problems.append(
            f"the cluster did not serve a write and a read within {RECOVERY_TIMEOUT}s after healing"
        )
    else:
        for w in watches:
            if not await w.wait_for(marker.revision, CATCH_UP_TIMEOUT):
                problems.append(
                    f"watch#{w.id} stalled: nothing delivered past rev {w.last_revision} "
                    f"within {CATCH_UP_TIMEOUT}s of the final write at rev {marker.revision}"
                )
    stop_watches.set()
    await asyncio.wait_for(asyncio.gather(*watch_tasks), 15)
    problems.extend(f"{name} crashed (exited without an injected kill)" for name in cluster.crashed())
    if front is not None and not front.running:
        problems.append(f"the {config.front} in front of the cluster exited")
    return _judge(history, [w.stream() for w in watches], injector, problems, config, report_dir)


def _judge(
    history: History,
    streams: list[WatchStream],
    injector: FaultInjector,
    problems: list[str],
    config: RunConfig,
    report_dir: Path,
) -> Verdict:
    history.watches = streams
    (report_dir / "history.json").write_text(archive.dump(history))
    (report_dir / "faults.txt").write_text("\n".join(injector.log) + "\n")
    started = time.monotonic()
    lin = check_history(
        history.operations,
        streams,
        budget_seconds=config.search_budget,
        report_path=report_dir / "linearizability.txt",
        pauses=history.pauses,
    )
    lin_seconds = time.monotonic() - started
    stale = check_serializable(history.operations)
    if stale:
        (report_dir / "serializable.txt").write_text("\n".join(stale) + "\n")
    watch = check_watches(
        history.operations,
        streams,
        config.workload.keyspace,
        compactions=history.compactions,
        report_path=report_dir / "watch.txt",
    )
    if problems:
        (report_dir / "run.txt").write_text("\n".join(problems) + "\n")
    counts = history.counts()
    summary = [
        f"seed={config.seed} target={config.target} duration={config.duration}s "
        f"faults={','.join(config.faults)}" + (f" front={config.front}" if config.front else ""),
        f"operations: {counts['ok']} ok, {counts['unknown']} unknown, {counts['failed']} failed; "
        f"watch events: {counts['watch_events']} in {len(streams)} streams",
        f"faults injected: {injector.injected}"
        + (f" ({', '.join(f'{k} {n}' for k, n in sorted(injector.injected_kinds.items()))})"
           if injector.injected else ""),
        _lease_line(history),
        f"linearizability: {_word(lin.ok)} ({lin.operations} ops searched, "
        f"{lin.dropped_unknown} unknown dropped, "
        f"{lin.maybe} maybe, {lin.steps} steps, {lin_seconds:.1f}s)",
        f"watch: {_word(watch.ok)}",
        f"serializable reads monotonic per member session: {_word(not stale)}",
        *problems,
        *stale[:20],
    ]
    if lin.ok is False:
        summary.append(lin.report.rstrip())
    if not watch.ok:
        summary.append(watch.report.rstrip())
    ok: bool | None = lin.ok is True and watch.ok and not problems and not stale
    if lin.ok is None and watch.ok and not problems:
        ok = None
    return Verdict(ok, summary, history=history)


def _lease_line(history: History) -> str:
    """What the run did with leases and serializable reads (to see that they were exercised)."""
    tally: Counter[str] = Counter()
    for op in history.operations:
        req, resp = op.request, op.response
        ok = op.outcome == "ok" and resp is not None
        if isinstance(req, LeaseGrant | LeaseRevoke | LeaseKeepAlive) and ok:
            tally[type(req).__name__] += 1
        elif isinstance(req, Put) and req.lease and ok:
            tally["gone" if resp.error else "leased"] += 1  # type: ignore[union-attr]
        elif isinstance(req, Range) and req.serializable and ok:
            tally["serializable"] += 1
    return (
        f"leases: {tally['LeaseGrant']} granted, {tally['LeaseRevoke']} revoked, "
        f"{tally['LeaseKeepAlive']} keep-alives, {tally['leased']} puts with a lease, "
        f"{tally['gone']} found it gone; {tally['serializable']} serializable reads (all ok outcomes)"
    )


def _word(ok: bool | None) -> str:
    return {True: "ok", False: "VIOLATION", None: "inconclusive (search budget exhausted)"}[ok]
