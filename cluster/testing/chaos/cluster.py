"""A three-member cluster (Quorum or real etcd) on 127.0.0.1-3 whose peer links all pass through
FaultProxies, so the fault injectors can partition and delay members.

Each member advertises its proxy's URL as its peer URL; the proxy forwards to the member's real
``--listen-peer-urls``. Proxies label connections by the dialling member (`ProcessGroupIdentifier`), so
`ProxyNetwork.isolate` cuts both directions (see the faultproxy module docstring for why that matters).

Invariant: `close()` resumes stopped members, kills every process, removes the temp dirs and stops the
proxies, whatever state the run left them in.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from cluster.api.gen.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from cluster.testing.faultproxy import FaultProxy, ProcessGroupIdentifier, ProxyNetwork
from cluster.testing.procs import NODE_KINDS, NodeProcess

HOSTS = ("127.0.0.1", "127.0.0.2", "127.0.0.3")
DISK_ERRORS = ("No space left on device", "Input/output error")
"""What a member logs when its full disk stops it (LMDB reports EIO as well as ENOSPC on a full tmpfs)."""
TIMING = ("--heartbeat-interval=50", "--election-timeout=500")


class _ProxiedPeerUrl:
    """Mixin: advertise ``advertised_peer_url`` (the proxy) instead of the listen URL."""

    advertised_peer_url = ""

    def base_flags(self) -> list[str]:
        flags: list[str] = super().base_flags()  # type: ignore[misc]
        key = "--initial-advertise-peer-urls="
        return [key + self.advertised_peer_url if f.startswith(key) else f for f in flags]


def _member_class(kind: str) -> type[NodeProcess]:
    return type(f"Proxied{NODE_KINDS[kind].__name__}", (_ProxiedPeerUrl, NODE_KINDS[kind]), {})


@dataclass
class ChaosCluster:
    kind: str
    members: list[NodeProcess]
    network: ProxyNetwork
    paused: set[str] = field(default_factory=set)
    killed: set[str] = field(default_factory=set)
    """Members down because a fault killed them (any other dead member crashed)."""
    disk_filled: set[str] = field(default_factory=set)
    """Members whose disk a fault filled at some point."""
    disks: dict[str, Path] = field(default_factory=dict)
    """Member name -> the small tmpfs holding its data dir (only when asked for, and mounted)."""

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    def member(self, name: str) -> NodeProcess:
        return next(m for m in self.members if m.name == name)

    def leader(self, timeout: float = 1.0) -> NodeProcess | None:
        """The member that says it is the leader (asked over Maintenance.Status), if any answers so."""
        for m in self.members:
            if not m.running or m.name in self.paused:
                continue
            try:
                with grpc.insecure_channel(m.endpoint) as ch:
                    st = rpc_pb2_grpc.MaintenanceStub(ch).Status(rpc_pb2.StatusRequest(), timeout=timeout)
            except grpc.RpcError:
                continue
            if st.leader and st.leader == st.header.member_id:
                return m
        return None

    def signal(self, member: NodeProcess, sig: int) -> None:
        if member.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(member.pid, sig)

    def stopped_by_disk(self, member: NodeProcess) -> bool:
        """The member's disk was filled and it logged a disk error (it stops then, as etcd does)."""
        log = member.current_log()
        return member.name in self.disk_filled and any(e in log for e in DISK_ERRORS)

    def crashed(self) -> list[str]:
        """Members whose process exited though no fault killed it (nor filled its disk)."""
        return [
            m.name
            for m in self.members
            if not m.running and m.name not in self.killed and not self.stopped_by_disk(m)
        ]

    def close(self) -> None:
        for m in self.members:
            if m.name in self.paused:
                self.signal(m, signal.SIGCONT)
            m.close()
        self.network.close()
        for disk in self.disks.values():
            subprocess.run(["umount", "-l", str(disk)], capture_output=True, check=False)
            shutil.rmtree(disk, ignore_errors=True)


def mount_small_disk(size_mb: int) -> Path | None:
    """A fresh tmpfs of ``size_mb`` MiB on a temp dir (needs root); None if it cannot be mounted."""
    where = Path(tempfile.mkdtemp(prefix="chaos-disk-"))
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(where)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        where.rmdir()
        return None
    return where


def start_cluster(
    kind: str, *flags: str, ready_timeout: float = 60.0, disk_mb: int | None = None
) -> ChaosCluster:
    """Start three members of ``kind`` behind peer proxies and wait until each serves; with ``disk_mb``
    each member's data dir is on its own tmpfs of that size, if one can be mounted (else `disks` is
    empty and the data dirs are ordinary temp dirs)."""
    cls = _member_class(kind)
    disks: dict[str, Path] = {}
    if disk_mb is not None:
        for i in range(len(HOSTS)):
            disk = mount_small_disk(disk_mb)
            if disk is None:
                break
            disks[f"m{i + 1}"] = disk
    members = [
        cls(
            name=f"m{i + 1}",
            host=host,
            flags=[*TIMING, *flags],
            data_dir=disks[f"m{i + 1}"] / "data" if f"m{i + 1}" in disks else None,
        )
        for i, host in enumerate(HOSTS)
    ]
    identify = ProcessGroupIdentifier(lambda: {m.pid: m.name for m in members if m.pid is not None})
    proxies: dict[str, FaultProxy] = {}
    cluster = ChaosCluster(kind, members, ProxyNetwork(proxies), disks=disks)
    try:
        for m in members:
            proxy = FaultProxy((m.host, 0), (m.host, m.peer_port), identify=identify, name=f"peer-{m.name}")
            proxies[m.name] = proxy.start()
            m.advertised_peer_url = proxy.url  # type: ignore[attr-defined]
        cluster.network = ProxyNetwork(proxies)
        initial = ",".join(f"{m.name}={m.advertised_peer_url}" for m in members)  # type: ignore[attr-defined]
        for m in members:
            m.initial_cluster = initial
            m.start(wait=False)
        for m in members:
            m.wait_ready(timeout=ready_timeout)
    except BaseException:
        cluster.network = ProxyNetwork(proxies)
        cluster.close()
        raise
    return cluster
