"""The L4 gateway (`python -m gateway start`) in front of a real 3-member Quorum cluster, driven by the
real etcdctl 3.4: KV, watch and lease keep-alive pass through; a member killed with SIGKILL is skipped by
new connections at once; a long-lived watch reconnects through the gateway and resumes without losing
events; with every member down connections are refused at once, and served again within --retry-delay
after the members return.

One cluster serves the module; tests that kill members restart them before they end (the all-down test
runs last).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cluster.testing.ports import free_port
from cluster.testing.procs import NodeProcess, etcdctl, etcdctl_binary
from cluster.testing.rawkv import RawKV
from gateway.testing import GatewayProcess
from tests.conftest import NodeFactory, require_etcdctl

RETRY_DELAY_S = 2.0


@pytest.fixture(scope="module")
def cluster(module_node_factory: NodeFactory) -> list[NodeProcess]:
    require_etcdctl()
    return module_node_factory.cluster("quorum", 3)


@pytest.fixture
def gateway(cluster: list[NodeProcess]) -> Iterator[GatewayProcess]:
    metrics_port = free_port()
    gw = GatewayProcess(
        [n.endpoint for n in cluster],
        flags=[f"--retry-delay={RETRY_DELAY_S}s", f"--metrics-addr=127.0.0.1:{metrics_port}"],
    )
    gw.metrics_port = metrics_port  # type: ignore[attr-defined]
    try:
        gw.start()
        yield gw
    finally:
        gw.close()


def metrics(gw: GatewayProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    port = gw.metrics_port  # type: ignore[attr-defined]
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def counter_by_endpoint(gw: GatewayProcess, name: str) -> dict[str, float]:
    return {dict(labels)["endpoint"]: value for (n, labels), value in metrics(gw).items() if n == name}


def open_connections(gw: GatewayProcess) -> dict[str, float]:
    return {ep: v for ep, v in counter_by_endpoint(gw, "quorum_gateway_connections_open").items() if v}


def member_id(endpoint: str) -> int:
    done = etcdctl(endpoint, "endpoint", "status", "-w", "json", timeout=10)
    assert done.returncode == 0, done.stderr
    return int(json.loads(done.stdout)[0]["Status"]["header"]["member_id"])


def ensure_running(nodes: list[NodeProcess]) -> None:
    stopped = [n for n in nodes if not n.running]
    for n in stopped:
        n.start(wait=False)
    for n in stopped:
        n.wait_ready(60)


def test_etcdctl_put_get_and_txn_through_the_gateway(
    cluster: list[NodeProcess], gateway: GatewayProcess
) -> None:
    assert etcdctl(gateway.endpoint, "put", "gw/k", "v1").stdout.strip() == "OK"
    assert etcdctl(gateway.endpoint, "put", "gw/k2", "v2").stdout.strip() == "OK"
    through = etcdctl(gateway.endpoint, "get", "--prefix", "gw/").stdout
    assert through == "gw/k\nv1\ngw/k2\nv2\n"
    assert etcdctl(cluster[2].endpoint, "get", "--prefix", "gw/").stdout == through


def test_connections_are_spread_round_robin(cluster: list[NodeProcess], gateway: GatewayProcess) -> None:
    before = counter_by_endpoint(gateway, "quorum_gateway_connections_total")
    for _ in range(6):
        with socket.create_connection(("127.0.0.1", gateway.client_port), timeout=5) as sock:
            sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            time.sleep(0.02)
    time.sleep(0.2)
    after = counter_by_endpoint(gateway, "quorum_gateway_connections_total")
    assert {ep: after[ep] - before.get(ep, 0) for ep in after} == {n.endpoint: 2 for n in cluster}


def test_etcdctl_watch_and_lease_keep_alive_through_the_gateway(gateway: GatewayProcess) -> None:
    exe = etcdctl_binary()
    assert exe is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")} | {"ETCDCTL_API": "3"}
    with tempfile.TemporaryFile() as watch_out, tempfile.TemporaryFile() as alive_out:
        watch = subprocess.Popen(
            [exe, f"--endpoints={gateway.endpoint}", "watch", "wk"],
            stdout=watch_out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        lease = etcdctl(gateway.endpoint, "lease", "grant", "3").stdout.split()[1]
        alive = subprocess.Popen(
            [exe, f"--endpoints={gateway.endpoint}", "lease", "keep-alive", lease],
            stdout=alive_out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        try:
            time.sleep(0.7)
            for value in ("a", "b", "c"):
                assert etcdctl(gateway.endpoint, "put", "wk", value).returncode == 0
            assert etcdctl(gateway.endpoint, "put", "leased", "x", f"--lease={lease}").returncode == 0
            time.sleep(4.0)  # longer than the TTL: only the keep-alive keeps the key
        finally:
            for proc in (watch, alive):
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(10)
        watch_out.seek(0)
        alive_out.seek(0)
        watched = watch_out.read().decode()
        keepalives = alive_out.read().decode()
    assert watched.split() == ["PUT", "wk", "a", "PUT", "wk", "b", "PUT", "wk", "c"]
    assert keepalives.count(f"lease {lease} keepalived with TTL(3)") >= 3
    assert etcdctl(gateway.endpoint, "get", "leased", "--print-value-only").stdout == "x\n"


class Writer(threading.Thread):
    """Puts ``wr/<n>`` straight to the members (not through the gateway) until stopped; remembers
    which puts were acknowledged."""

    def __init__(self, endpoints: list[str]) -> None:
        super().__init__(daemon=True)
        self.endpoints = endpoints
        self.acked: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        clients = [RawKV(e) for e in self.endpoints]
        n = 0
        try:
            while not self.stop.is_set():
                key = f"wr/{n:05d}"
                for kv in clients:
                    try:
                        kv.put(key.encode(), b"x", timeout=1.0)
                    except grpc.RpcError:
                        continue
                    self.acked.append(key)
                    break
                n += 1
                time.sleep(0.005)
        finally:
            for kv in clients:
                kv.close()


def test_kill_9_member_new_connections_go_to_live_members_and_watch_resumes(
    cluster: list[NodeProcess], gateway: GatewayProcess
) -> None:
    exe = etcdctl_binary()
    assert exe is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")} | {"ETCDCTL_API": "3"}
    start_rev = json.loads(etcdctl(cluster[0].endpoint, "get", "nothing", "-w", "json").stdout)["header"][
        "revision"
    ]
    writer = Writer([n.endpoint for n in cluster])
    with tempfile.TemporaryFile() as out:
        watch = subprocess.Popen(
            [
                exe,
                f"--endpoints={gateway.endpoint}",
                "watch",
                "--prefix",
                "wr/",
                f"--rev={start_rev + 1}",
                "-w",
                "json",
            ],
            stdout=out,
            stderr=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 10
            while not (used := open_connections(gateway)) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert list(used.values()) == [1.0], used  # the watch's one connection
            victim = next(n for n in cluster if n.endpoint == next(iter(used)))
            survivors = [n for n in cluster if n is not victim]
            writer.endpoints = [n.endpoint for n in survivors]
            writer.start()
            time.sleep(0.5)
            victim.kill(signal.SIGKILL)
            killed_at = time.monotonic()
            live_ids = {member_id(n.endpoint) for n in survivors}
            for _ in range(4):  # every new connection lands on a live member, without delay
                began = time.monotonic()
                assert member_id(gateway.endpoint) in live_ids
                assert time.monotonic() - began < 2.0
            time.sleep(max(0.0, killed_at + 3.0 - time.monotonic()))
            writer.stop.set()
            writer.join(10)
            time.sleep(2.0)  # the watch reconnects (gRPC backoff ~1 s) and catches up
        finally:
            writer.stop.set()
            os.killpg(watch.pid, signal.SIGTERM)
            watch.wait(10)
            ensure_running(cluster)
        out.seek(0)
        responses = [json.loads(line) for line in out.read().decode().splitlines() if line.startswith("{")]
    events = [ev for r in responses for ev in r.get("Events") or ()]
    keys = [base64.b64decode(ev["kv"]["key"]).decode() for ev in events]
    revisions = [int(ev["kv"]["mod_revision"]) for ev in events]
    assert len(writer.acked) > 50
    assert revisions == sorted(set(revisions)), "events duplicated or out of order"
    missing = set(writer.acked) - set(keys)
    assert not missing, f"{len(missing)} acknowledged puts never reached the watch: {sorted(missing)[:5]}"
    assert metrics(gateway)[("quorum_gateway_dial_failures_total", (("endpoint", victim.endpoint),))] >= 1


def _refused_quickly(endpoint: str) -> float:
    """Seconds until a fresh connection to ``endpoint`` is closed by the gateway (it must be)."""
    host, port = endpoint.rsplit(":", 1)
    began = time.monotonic()
    try:
        sock = socket.create_connection((host, int(port)), timeout=5)
    except (ConnectionRefusedError, ConnectionResetError):  # refused or reset at connect: as quick as any
        return time.monotonic() - began
    with sock:
        sock.settimeout(5)
        try:
            assert sock.recv(1) == b""
        except ConnectionResetError:
            pass
    return time.monotonic() - began


def test_all_members_down_refused_at_once_then_served_within_retry_delay(
    cluster: list[NodeProcess], gateway: GatewayProcess
) -> None:
    try:
        for n in cluster:
            n.kill(signal.SIGKILL)
        assert _refused_quickly(gateway.endpoint) < 1.0  # every member is dialled once and fails
        assert _refused_quickly(gateway.endpoint) < 0.2  # now all are inactive: no dial at all
        began = time.monotonic()
        failed = etcdctl(
            gateway.endpoint, "--dial-timeout=1s", "--command-timeout=1s", "get", "k", timeout=10
        )
        assert failed.returncode != 0 and time.monotonic() - began < 5
        for n in cluster:
            n.start(wait=False)
        for n in cluster:
            n.wait_ready(60)
        back_at = time.monotonic()
        while etcdctl(gateway.endpoint, "--dial-timeout=1s", "get", "k", timeout=10).returncode != 0:
            assert time.monotonic() - back_at < RETRY_DELAY_S + 2.0, "not served again within --retry-delay"
            time.sleep(0.1)
        assert "activated" in gateway.logs()
    finally:
        ensure_running(cluster)
