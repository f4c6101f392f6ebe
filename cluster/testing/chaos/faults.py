"""Seeded fault injectors: kill -9 and restart of the leader or a follower, SIGSTOP/SIGCONT pauses,
peer partitions (refused or black-holed) and peer delay through the FaultProxies, compaction and defrag
during load.

One fault at a time, each healed before the next, chosen and timed by ``random.Random(seed)`` so a run's
fault schedule is reproducible (the cluster's timing, of course, is not). Faults act through blocking
calls (process signals, proxy switches, waiting for a restarted member), so they run in a worker thread
and never stall the workload's event loop. Every fault is logged with its time for the report.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections.abc import Callable

import grpc

from cluster.api.gen.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from cluster.testing.chaos.cluster import ChaosCluster
from cluster.testing.chaos.history import History
from cluster.testing.procs import NodeProcess, NodeStartError

FAULT_KINDS = ("kill", "pause", "partition", "delay", "compact", "defrag")


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
        self.errors: list[str] = []
        """Faults that could not be healed (a member that did not come back): violations of the run."""
        self._started = time.monotonic()
        self._actions: dict[str, Callable[[], None]] = {
            "kill": self.kill,
            "pause": self.pause,
            "partition": self.partition,
            "delay": self.delay,
            "compact": self.compact,
            "defrag": self.defrag,
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
            await asyncio.to_thread(self._actions[kind])

    # ------------------------------------------------------------------------------------ the faults

    def kill(self) -> None:
        victim, down = self._victim(), self._duration()
        role = "leader" if victim is self.cluster.leader() else "follower"
        self._note(f"kill -9 {victim.name} ({role}) for {down:.2f}s")
        self.cluster.killed.add(victim.name)
        victim.kill(signal.SIGKILL)
        time.sleep(down)
        self.restart(victim)

    def restart(self, member: NodeProcess) -> None:
        try:
            member.start(timeout=60)
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
        self.cluster.signal(victim, signal.SIGSTOP)
        time.sleep(pause)
        self.cluster.signal(victim, signal.SIGCONT)
        self.cluster.paused.discard(victim.name)

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

    def heal_all(self) -> None:
        """Undo whatever is left: heal the network, resume paused and restart killed members."""
        self.cluster.network.heal()
        for m in self.cluster.members:
            if m.name in self.cluster.paused:
                self.cluster.signal(m, signal.SIGCONT)
                self.cluster.paused.discard(m.name)
            if m.name in self.cluster.killed and not m.running:
                self.restart(m)
