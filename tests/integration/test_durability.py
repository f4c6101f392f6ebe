"""An acknowledged put survives kill -9: the node fsyncs before it answers.

Several client threads, each with its own gRPC channel, write distinct keys as fast as they can and
record every put the server acknowledged (with its revision). The node is killed with SIGKILL in the
middle of that load and restarted on the same data dir. Then:

- every acknowledged put is present with the acknowledged value and mod_revision;
- a key that is present but was never acknowledged was at least attempted, with that value (an
  in-flight put may or may not have committed);
- revisions never go back: a new write gets a revision strictly greater than every acknowledged one.

The test runs against real etcd too, which shows it can pass and that it exercises real concurrency.
"""

from __future__ import annotations

import re
import threading
import time
import urllib.request
from dataclasses import dataclass, field

import grpc
import pytest

from cluster.testing.procs import NodeProcess
from cluster.testing.rawkv import RawKV

WRITERS = 8
ROUNDS = 2
MIN_ACKS_BEFORE_KILL = 300
LOAD_SECONDS_MAX = 20.0


@dataclass
class WriteLog:
    """What the writers sent and what the server confirmed, shared by all writer threads."""

    attempted: dict[bytes, bytes] = field(default_factory=dict)
    acked: dict[bytes, tuple[bytes, int]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ack_count(self) -> int:
        with self.lock:
            return len(self.acked)


def writer(endpoint: str, prefix: str, log: WriteLog, stop: threading.Event) -> None:
    """Put distinct keys until the server stops answering or ``stop`` is set."""
    with RawKV(endpoint) as kv:
        i = 0
        while not stop.is_set():
            key = f"{prefix}/{i:07d}".encode()
            value = f"value-of-{prefix}-{i}".encode() * 4
            with log.lock:
                log.attempted[key] = value
            try:
                header = kv.put(key, value, timeout=2.0)
            except grpc.RpcError:
                return  # the node died: this put is in flight, neither confirmed nor denied
            with log.lock:
                log.acked[key] = (value, header.revision)
            i += 1


def run_load_then_kill(node: NodeProcess, round_no: int, log: WriteLog) -> None:
    stop = threading.Event()
    threads = [
        threading.Thread(target=writer, args=(node.endpoint, f"r{round_no}w{t}", log, stop), daemon=True)
        for t in range(WRITERS)
    ]
    before = log.ack_count()
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + LOAD_SECONDS_MAX
    while log.ack_count() - before < MIN_ACKS_BEFORE_KILL and time.monotonic() < deadline:
        time.sleep(0.01)
    node.kill()  # SIGKILL while every writer has a put in flight
    stop.set()
    for thread in threads:
        thread.join(timeout=15)
        assert not thread.is_alive(), "a writer hung after the node was killed"
    assert log.ack_count() - before >= MIN_ACKS_BEFORE_KILL, "the load was too slow to test anything"


def check_everything_acknowledged_survived(node: NodeProcess, log: WriteLog) -> int:
    """Check the store against the write log; return the highest revision seen."""
    with RawKV(node.endpoint) as kv:
        present = {item.key: item for item in kv.get_prefix(b"r")}
    missing = [key for key in log.acked if key not in present]
    assert not missing, f"{len(missing)} acknowledged puts lost after kill -9, e.g. {missing[:5]}"
    for key, (value, revision) in log.acked.items():
        item = present[key]
        assert item.value == value, f"{key!r} has a different value after restart"
        assert item.mod_revision == revision, f"{key!r} acked at {revision}, now at {item.mod_revision}"
    for key, item in present.items():
        assert key in log.attempted, f"{key!r} appeared without ever being written"
        assert item.value == log.attempted[key]
    return max([item.mod_revision for item in present.values()], default=0)


@pytest.mark.timeout(180)
def test_acknowledged_puts_survive_kill_9_under_concurrent_load(node: NodeProcess) -> None:
    log = WriteLog()
    for round_no in range(ROUNDS):
        run_load_then_kill(node, round_no, log)
        node.start()
        highest_present = check_everything_acknowledged_survived(node, log)
        highest_acked = max(revision for _, revision in log.acked.values())
        assert highest_present >= highest_acked

        with RawKV(node.endpoint) as kv:
            header = kv.put(f"after-restart-{round_no}".encode(), b"x")
        assert header.revision > highest_acked
        assert header.revision > highest_present


def _backend_commits(node: NodeProcess) -> float:
    """etcd_disk_backend_commit_duration_seconds_count from the node's /metrics."""
    with urllib.request.urlopen(f"{node.client_url}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    found = re.search(r"^etcd_disk_backend_commit_duration_seconds_count (\S+)$", text, re.MULTILINE)
    assert found is not None, "no backend commit histogram in /metrics"
    return float(found.group(1))


@pytest.mark.timeout(120)
def test_puts_answered_before_their_backend_commit_survive_kill_9(node_factory) -> None:
    """Quorum answers an inline-applied put before LMDB commits it, and later inline applies go on
    in the same transaction (docs/architecture.md, "Answer before the backend commit"). With the
    commit held back for an hour, a run of acknowledged puts is not in the database file at all
    when the node is killed: the WAL alone must bring every one of them back."""
    node = node_factory("quorum", flags=["--backend-batch-interval=1h"])
    acked: dict[bytes, tuple[bytes, int]] = {}
    with RawKV(node.endpoint) as kv:
        kv.put(b"warm-up", b"x")  # settle whatever start-up commits remain
        commits_before = _backend_commits(node)
        for i in range(20):
            key, value = f"deferred/{i:02d}".encode(), f"value-{i}".encode()
            acked[key] = (value, kv.put(key, value).revision)
        commits_during = _backend_commits(node) - commits_before
    assert commits_during <= 2, f"{commits_during:.0f} backend commits for 20 lone puts: not deferred"
    node.kill()
    node.start()
    with RawKV(node.endpoint) as kv:
        present = {item.key: (item.value, item.mod_revision) for item in kv.get_prefix(b"deferred/")}
        assert present == acked
        assert kv.put(b"after", b"x").revision == max(rev for _, rev in acked.values()) + 1
