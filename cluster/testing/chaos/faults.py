"""Seeded fault injectors: kill -9 and restart of the leader or a follower, SIGSTOP/SIGCONT pauses,
peer partitions (refused or black-holed), peer delay and packet loss through the FaultProxies,
compaction and defrag during load.

One fault at a time, each healed before the next, chosen and timed by ``random.Random(seed)`` so a run's
fault schedule is reproducible (the cluster's timing, of course, is not). Faults act through blocking
calls (process signals, proxy switches, waiting for a restarted member), so they run in a worker thread
and never stall the workload's event loop. Every fault is logged with its time for the report.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
import signal
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import grpc

from cluster.api.gen.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from cluster.testing.chaos.cluster import ChaosCluster
from cluster.testing.chaos.history import History
from cluster.testing.procs import NodeProcess, NodeStartError

FAULT_KINDS = (
    "kill", "pause", "partition", "delay", "loss", "compact", "defrag", "member", "diskfull", "killall"
)


class FaultInjector:
    def __init__(self, cluster: ChaosCluster, seed: int, kinds: tuple[str, ...], history: History) -> None:
        unknown = set(kinds) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {', '.join(FAULT_KINDS)}")
        self.cluster = cluster
        self.history = history
        self.kinds = kinds
        self.rng = random.Random(seed)
        self.log: list[str] = []
        self.injected = 0
        self.injected_kinds: Counter[str] = Counter()
        self.errors: list[str] = []
        """Faults that could not be healed (a member that did not come back): violations of the run."""
        self._started = time.monotonic()
        self._actions: dict[str, Callable[[], None]] = {
            "kill": self.kill,
            "pause": self.pause,
            "partition": self.partition,
            "delay": self.delay,
            "loss": self.loss,
            "compact": self.compact,
            "defrag": self.defrag,
            "member": self.replace_member,
            "diskfull": self.fill_disk,
            "killall": self.kill_all,
        }

    def _note(self, text: str) -> None:
        self.log.append(f"t+{time.monotonic() - self._started:7.2f}s {text}")

    def _duration(self) -> float:
        return self.rng.uniform(0.5, 2.5)

    def _victim(self) -> NodeProcess:
        """The leader or a follower, half and half (a random member when no leader is known)."""
        members = self.cluster.members
        if self.rng.random() < 0.5 and (leader := self.cluster.leader()) is not None:
            return leader
        return self.rng.choice(members)

    async def run(self, stop: asyncio.Event) -> None:
        """Inject faults until ``stop`` is set; the fault in progress is healed before returning."""
        if not self.kinds:
            return
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), self.rng.uniform(0.3, 1.5))
                return
            except TimeoutError:
                pass
            kind = self.rng.choice(self.kinds)
            self.injected += 1
            self.injected_kinds[kind] += 1
            try:
                await asyncio.to_thread(self._actions[kind])
            except Exception as exc:  # a fault that cannot be carried out is a finding, not a crash
                self.errors.append(f"{kind} fault failed: {exc!r}")
                self._note(f"{kind} FAILED: {exc!r}")

    # ------------------------------------------------------------------------------------ the faults

    def kill(self) -> None:
        victim, down = self._victim(), self._duration()
        role = "leader" if victim is self.cluster.leader() else "follower"
        self._note(f"kill -9 {victim.name} ({role}) for {down:.2f}s")
        self.cluster.killed.add(victim.name)
        self.history.new_incarnation(victim.endpoint)
        victim.kill(signal.SIGKILL)
        time.sleep(down)
        self.restart(victim)

    def kill_all(self) -> None:
        """kill -9 every member at once, then restart them all: every acknowledged write must come back
        from the members' WALs and backends, and the cluster must elect a leader again."""
        down = self._duration()
        self._note(f"kill -9 all members for {down:.2f}s")
        for m in self.cluster.members:
            self.cluster.killed.add(m.name)
            self.history.new_incarnation(m.endpoint)
            m.kill(signal.SIGKILL)
        time.sleep(down)
        for m in self.cluster.members:
            m.start(wait=False)
        for m in self.cluster.members:
            try:
                m.wait_ready(timeout=60)
            except NodeStartError as exc:
                self.errors.append(f"{m.name} did not restart: {exc}")
                continue
            self.cluster.killed.discard(m.name)
        self._note("restarted all members")

    def restart(self, member: NodeProcess, *flags: str) -> None:
        try:
            member.start(*flags, timeout=60)
        except NodeStartError as exc:
            self.errors.append(f"{member.name} did not restart: {exc}")
            self._note(f"restart of {member.name} FAILED")
            return
        self.cluster.killed.discard(member.name)
        self._note(f"restarted {member.name}")

    def pause(self) -> None:
        victim, pause = self._victim(), self._duration()
        self._note(f"SIGSTOP {victim.name} for {pause:.2f}s")
        self.cluster.paused.add(victim.name)
        started = time.monotonic()
        self.cluster.signal(victim, signal.SIGSTOP)
        time.sleep(pause)
        self.cluster.signal(victim, signal.SIGCONT)
        self.cluster.paused.discard(victim.name)
        self.history.add_pause(victim.endpoint, started, time.monotonic())

    def partition(self) -> None:
        victim, length = self._victim(), self._duration()
        how = self.rng.choice(("refuse", "blackhole"))
        self._note(f"isolate {victim.name} ({how}) for {length:.2f}s")
        self.cluster.network.isolate(victim.name, fault=how)  # type: ignore[arg-type]
        time.sleep(length)
        self.cluster.network.heal()

    def delay(self) -> None:
        victim, length = self._victim(), self._duration()
        delay, jitter = self.rng.uniform(0.02, 0.2), self.rng.uniform(0, 0.05)
        ms = f"{delay * 1000:.0f}ms+{jitter * 1000:.0f}ms"
        self._note(f"delay peer traffic to {victim.name} by {ms} for {length:.2f}s")
        self.cluster.network.proxies[victim.name].delay(delay, jitter)
        time.sleep(length)
        self.cluster.network.heal()

    def loss(self) -> None:
        """Packet loss on a member's peer links, as TCP lives it: a lost segment comes one
        retransmission timeout late and holds up the stream behind it (FaultProxy.loss)."""
        victim, length = self._victim(), self._duration()
        probability, rto = self.rng.uniform(0.01, 0.1), self.rng.uniform(0.2, 0.4)
        self._note(f"lose {probability:.0%} of peer traffic to {victim.name} (rto {rto * 1000:.0f}ms) "
                   f"for {length:.2f}s")
        self.cluster.network.proxies[victim.name].loss(probability, rto)
        time.sleep(length)
        self.cluster.network.heal()

    def compact(self) -> None:
        member = self.rng.choice([m for m in self.cluster.members if m.running])
        try:
            with grpc.insecure_channel(member.endpoint) as ch:
                kv = rpc_pb2_grpc.KVStub(ch)
                current = kv.Range(rpc_pb2.RangeRequest(key=b"\0", limit=1), timeout=3).header.revision
                target = max(1, current - self.rng.randrange(0, 30))
                physical = self.rng.random() < 0.5
                self.history.add_compaction(target)  # before the request: it may apply and still fail
                kv.Compact(rpc_pb2.CompactionRequest(revision=target, physical=physical), timeout=10)
            self._note(f"compact at rev {target} (physical={physical}) via {member.name}")
        except grpc.RpcError as exc:
            self._note(f"compact via {member.name} failed: {exc.code()}")

    def defrag(self) -> None:
        member = self.rng.choice([m for m in self.cluster.members if m.running])
        try:
            with grpc.insecure_channel(member.endpoint) as ch:
                rpc_pb2_grpc.MaintenanceStub(ch).Defragment(rpc_pb2.DefragmentRequest(), timeout=30)
            self._note(f"defrag {member.name}")
        except grpc.RpcError as exc:
            self._note(f"defrag {member.name} failed: {exc.code()}")

    def fill_disk(self) -> None:
        """Fill the tmpfs under a member's data dir for a while, then free it. A member may die of
        ENOSPC (etcd exits on a failed WAL write); it is then restarted like a killed one."""
        victim, length = self._victim(), self._duration()
        disk = self.cluster.disks.get(victim.name)
        if disk is None:
            self._note("diskfull skipped: no small disk mounted (needs root)")
            return
        filler = disk / "filler"
        self._note(f"fill the disk of {victim.name} for {length:.2f}s")
        self.cluster.disk_filled.add(victim.name)
        with contextlib.suppress(OSError), open(filler, "wb") as f:
            chunk = b"\0" * (1 << 20)
            while True:
                f.write(chunk)
                f.flush()
        time.sleep(length)
        filler.unlink(missing_ok=True)
        self._recover_from_full_disk(victim)

    def _recover_from_full_disk(self, member: NodeProcess) -> None:
        """A member that hit ENOSPC stops (as etcd does on a failed backend commit or WAL write), but its
        shutdown takes a moment: wait for it (bounded) and restart it like a killed one."""
        if member.running and not self.cluster.stopped_by_disk(member):
            return
        deadline = time.monotonic() + 15
        while member.running and time.monotonic() < deadline:
            time.sleep(0.1)
        if member.running:
            self._note(f"{member.name} logged a disk error and kept running")
            return
        self._note(f"{member.name} exited after a disk error")
        self.cluster.killed.add(member.name)
        self.history.new_incarnation(member.endpoint)
        self.restart(member)

    def replace_member(self) -> None:
        """Remove a member, wipe its data and add it back as a new member (same name and peer URL):
        a membership change in each direction, and a snapshot sent to a member that starts empty."""
        victim = self._victim()
        others = [m for m in self.cluster.members if m is not victim and m.running]
        self._note(f"member remove {victim.name}")
        ids = {m.name: m.ID for m in self._membership(others, rpc_pb2.MemberListRequest()).members}
        if victim.name not in ids:
            self.errors.append(f"{victim.name} is not in the member list: {sorted(ids)}")
            return
        self.cluster.killed.add(victim.name)  # a removed member stops itself
        self.history.new_incarnation(victim.endpoint)
        self._membership(others, rpc_pb2.MemberRemoveRequest(ID=ids[victim.name]))
        deadline = time.monotonic() + 20
        while victim.running and time.monotonic() < deadline:
            time.sleep(0.1)
        victim.kill()
        shutil.rmtree(victim.data_dir, ignore_errors=True)
        url = victim.advertised_peer_url  # type: ignore[attr-defined]
        self._membership(others, rpc_pb2.MemberAddRequest(peerURLs=[url]))
        self._note(f"member add {victim.name} (empty data dir)")
        self.restart(victim, "--initial-cluster-state=existing")

    def _membership(self, via: list[NodeProcess], request: object) -> Any:
        """A Cluster RPC through any of ``via``, retried while the cluster says it is unhealthy (etcd
        refuses changes until every voter has been connected for 5 s) or has no leader, for up to 30 s."""
        method = {
            "MemberListRequest": "MemberList",
            "MemberRemoveRequest": "MemberRemove",
            "MemberAddRequest": "MemberAdd",
        }[type(request).__name__]
        deadline = time.monotonic() + 30
        while True:
            member = self.rng.choice(via)
            try:
                with grpc.insecure_channel(member.endpoint) as ch:
                    return getattr(rpc_pb2_grpc.ClusterStub(ch), method)(request, timeout=5)
            except grpc.RpcError as exc:
                if time.monotonic() > deadline:
                    raise
                self._note(f"{method} via {member.name}: {exc.code()} {exc.details()}; retrying")  # type: ignore[attr-defined]
                time.sleep(0.5)

    def heal_all(self) -> None:
        """Undo whatever is left: heal the network, resume paused and restart killed members."""
        self.cluster.network.heal()
        for m in self.cluster.members:
            if m.name in self.cluster.paused:
                self.cluster.signal(m, signal.SIGCONT)
                self.cluster.paused.discard(m.name)
            if m.name in self.cluster.killed and not m.running:
                self.restart(m)
            elif m.name in self.cluster.disk_filled:
                self._recover_from_full_disk(m)
