"""The operator's maintenance chapter, walked with the real etcdctl against a 3-member cluster of real
etcd and of Quorum, transcripts compared step by step.

Steps: start-up with tuning flags (--snapshot-count, --auto-compaction-*, a 16 MiB
--quota-backend-bytes); `compact 3` then `get --rev=2` fails; `defrag` (and `--cluster`); the
keyspace filled with 1 MB values until NOSPACE; `alarm list`; recovery by compact + defrag + disarm;
`snapshot save`; the cluster lost; `snapshot restore` of one file into three new members (etcdctl for
etcd, quorumctl for Quorum: each tool reads only its own server's database format); the new cluster
serving every key.

Normalised before comparing: endpoints, member ids, and stderr reduced to its last line (clientv3 logs
a retry line with timestamps before the error). Outputs that are not deterministic between the two
servers are checked by shape only: how many puts fit in 16 MiB (bbolt and LMDB grow differently), which
members raised NOSPACE, and the sizes in `endpoint status`.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cluster.ctl import main as ctl_main
from cluster.testing.ports import free_port
from cluster.testing.procs import NodeProcess, cluster_of, etcdctl, make_node, quorumctl
from tests.conftest import require_etcd, require_etcdctl

QUOTA = 16 * 1024 * 1024
VALUE = "v" * 1_000_000
FLAGS = (
    "--heartbeat-interval=50",
    "--election-timeout=500",
    "--snapshot-count=20",
    "--auto-compaction-mode=periodic",
    "--auto-compaction-retention=1",
    f"--quota-backend-bytes={QUOTA}",
)
STATUS_TABLE = re.compile(
    r"^\+-+\+-+\+-+\+-+\+\n\| +HASH +\| REVISION \| TOTAL KEYS \| TOTAL SIZE \|\n\+-+\+-+\+-+\+-+\+\n"
    r"\| +[0-9a-f]+ \| +\d+ \| +\d+ \| +[\d.]+ [kMG]?B \|\n\+-+\+-+\+-+\+-+\+\n$"
)
ALARM_LINE = re.compile(r"^memberID:\d+ alarm:NOSPACE ?$")


@dataclass
class Walk:
    kind: str
    nodes: list[NodeProcess]
    workdir: Path
    transcript: list[tuple[str, int, str, str]] = field(default_factory=list)

    @property
    def endpoints(self) -> str:
        return ",".join(n.endpoint for n in self.nodes)

    def normalise(self, text: str) -> str:
        if text.startswith('{"level"'):  # a zap log line: its message is what both tools share
            return str(json.loads(text)["msg"])
        for i, node in enumerate(self.nodes):
            text = text.replace(node.endpoint, f"EP{i}")
        text = text.replace(str(self.workdir), "WORK")
        text = re.sub(r"/tmp/[^\s,\"]+", "PATH", text)
        return re.sub(r"127\.0\.0\.1:\d+", "ADDR", text)

    def ctl(self, *args: str, endpoint: str | None = None, stdin: str | None = None, record: bool = True,
            tool: str = "etcdctl") -> tuple[int, str, str]:
        run = quorumctl if tool == "quorumctl" else etcdctl
        done = run(endpoint or self.nodes[0].endpoint, *args, input=stdin, timeout=60)
        err_lines = done.stderr.strip().splitlines()
        last_err = err_lines[-1] if err_lines else ""
        out, err = self.normalise(done.stdout), self.normalise(last_err)
        if "--cluster" in args:  # members come in member-id order, and the ids differ
            out = "".join(sorted(out.splitlines(keepends=True)))
        if record:
            self.transcript.append((self.normalise(" ".join(args)), done.returncode, out, err))
        return done.returncode, done.stdout, last_err


def _start(kind: str, workdir: Path) -> list[NodeProcess]:
    nodes = cluster_of(kind, 3, flags=FLAGS)
    for node in nodes:
        node.start(wait=False)
    for node in nodes:
        node.wait_ready(timeout=60)
    return nodes


def walk_chapter(kind: str) -> Iterator[Walk]:
    workdir = Path(tempfile.mkdtemp(prefix=f"chapter-{kind}-"))
    nodes = _start(kind, workdir)
    walk = Walk(kind, nodes, workdir)
    restored: list[NodeProcess] = []
    try:
        _chapter(walk, restored)
        yield walk
    finally:
        for node in nodes + restored:
            node.close()
        shutil.rmtree(workdir, ignore_errors=True)


def _chapter(w: Walk, restored: list[NodeProcess]) -> None:
    # History and compaction.
    for i in range(1, 4):
        w.ctl("put", "somekey", f"v{i}")
    w.ctl("compact", "3")
    w.ctl("get", "--rev=2", "somekey")
    w.ctl("get", "somekey")
    w.ctl("defrag")
    w.ctl("defrag", "--cluster")
    # Fill the keyspace until the quota refuses: etcd's runbook loop.
    puts = 0
    for _ in range(40):
        code, _out, err = w.ctl("put", "key", stdin=VALUE, record=False)
        if code != 0:
            w.transcript.append(("put key <1 MB> (until refused)", code, "", err))
            break
        puts += 1
    assert 5 <= puts < 40, f"{w.kind}: {puts} puts of 1 MB fitted a 16 MiB quota"
    code, out, _ = w.ctl("alarm", "list", record=False)
    lines = out.splitlines()
    assert code == 0 and lines and all(ALARM_LINE.match(line) for line in lines), out
    w.transcript.append(("alarm list (shape)", code, "memberID:N alarm:NOSPACE", ""))
    w.ctl("put", "other", "x")
    w.ctl("get", "somekey")
    w.ctl("del", "nothing")
    code, out, _ = w.ctl("endpoint", "status", "-w", "json", endpoint=w.endpoints, record=False)
    statuses = json.loads(out)
    assert all(any("alarm:NOSPACE" in e for e in s["Status"].get("errors", [])) for s in statuses), statuses
    revision = statuses[0]["Status"]["header"]["revision"]
    code, out, err = w.ctl("compact", str(revision), record=False)  # the revision depends on the fill
    w.transcript.append(("compact REV", code, out.replace(str(revision), "REV"), err))
    w.ctl("defrag", endpoint=w.endpoints)
    code, out, _ = w.ctl("endpoint", "status", "-w", "json", endpoint=w.endpoints, record=False)
    for s in json.loads(out):
        assert s["Status"]["dbSize"] < QUOTA // 2, s
        assert s["Status"]["dbSizeInUse"] <= s["Status"]["dbSize"], s
    code, out, _ = w.ctl("alarm", "disarm", record=False)
    assert code == 0 and out.strip(), out
    w.ctl("alarm", "list")
    w.ctl("put", "newkey", "123")
    w.ctl("get", "", "--prefix", "--keys-only")
    code, out, _ = w.ctl("endpoint", "hashkv", "--cluster", "-w", "json", record=False)
    hashes = {h["HashKV"]["hash"] for h in json.loads(out)}
    assert code == 0 and len(hashes) == 1, out  # every member hashes the same history
    _move_leader(w)
    # Snapshot, lose the cluster, restore three new members from the one file.
    snap = w.workdir / "backup.db"
    w.ctl("snapshot", "save", str(snap))
    status_tool = etcdctl if w.kind == "etcd" else quorumctl  # each reads its own server's format
    done = status_tool("127.0.0.1:1", "snapshot", "status", str(snap), "-w", "table")
    assert done.returncode == 0 and STATUS_TABLE.match(done.stdout), done
    for node in w.nodes:
        node.kill()
    tool = "etcdctl" if w.kind == "etcd" else "quorumctl"
    new = [make_node(w.kind, name=f"r{i + 1}", flags=FLAGS[:2]) for i in range(3)]
    cluster = ",".join(f"{n.name}={n.peer_url}" for n in new)
    for node in new:
        node.initial_cluster = cluster
        w.ctl("snapshot", "restore", str(snap), f"--name={node.name}", f"--initial-cluster={cluster}",
              "--initial-cluster-token=restored", f"--initial-advertise-peer-urls={node.peer_url}",
              f"--data-dir={node.data_dir}", tool=tool)
        restored.append(node)
    for node in new:
        node.start(wait=False)
    for node in new:
        node.wait_ready(timeout=60)
    w.nodes = new
    for node in new:
        w.ctl("get", "", "--prefix", "--keys-only", endpoint=node.endpoint)
        w.ctl("get", "somekey", endpoint=node.endpoint)
    w.ctl("put", "afterrestore", "ok")
    code, out, _ = w.ctl("member", "list", "-w", "json", record=False)
    assert len(json.loads(out)["members"]) == 3


def _move_leader(w: Walk) -> None:
    code, out, _ = w.ctl("endpoint", "status", "-w", "json", endpoint=w.endpoints, record=False)
    statuses = json.loads(out)
    leader = statuses[0]["Status"]["leader"]
    target = next(s["Status"]["header"]["member_id"] for s in statuses
                  if s["Status"]["header"]["member_id"] != leader)  # fmt: skip
    code, out, err = w.ctl("move-leader", f"{target:x}", endpoint=w.endpoints, record=False)
    assert out == f"Leadership transferred from {leader:x} to {target:x}\n", (out, err)
    w.transcript.append(("move-leader FOLLOWER", code, "Leadership transferred from LEADER to FOLLOWER", err))
    code, out, _ = w.ctl("endpoint", "status", "-w", "json", endpoint=w.endpoints, record=False)
    assert {s["Status"]["leader"] for s in json.loads(out)} == {target}


@pytest.fixture(scope="module")
def etcd_walk() -> Iterator[Walk]:
    require_etcd()
    require_etcdctl()
    yield from walk_chapter("etcd")


@pytest.fixture(scope="module")
def quorum_walk() -> Iterator[Walk]:
    require_etcdctl()
    yield from walk_chapter("quorum")


def test_quorum_walks_the_maintenance_chapter_with_etcds_output(etcd_walk: Walk, quorum_walk: Walk) -> None:
    assert [t[0] for t in quorum_walk.transcript] == [t[0] for t in etcd_walk.transcript]
    diffs = [(ours, theirs) for ours, theirs in zip(quorum_walk.transcript, etcd_walk.transcript, strict=True)
             if ours != theirs]
    assert not diffs


def test_the_restored_cluster_serves_every_key(quorum_walk: Walk) -> None:
    keys = [t for t in quorum_walk.transcript if t[0] == "get  --prefix --keys-only"]
    assert len(keys) == 4
    for _args, code, out, _err in keys[1:]:
        assert code == 0
        assert out.split() == ["key", "newkey", "somekey"]  # "other" was refused (NOSPACE)


def test_restore_refuses_a_corrupt_or_truncated_snapshot(tmp_path: Path) -> None:
    require_etcdctl()
    node = make_node("quorum", flags=["--heartbeat-interval=10", "--election-timeout=100"])
    try:
        node.start()
        etcdctl(node.endpoint, "put", "k", "v")
        snap = tmp_path / "s.db"
        saved = quorumctl(node.endpoint, "snapshot", "save", str(snap))
        assert saved.stdout == f"Snapshot saved at {snap}\n", saved.stderr
    finally:
        node.close()
    data = snap.read_bytes()
    flipped = tmp_path / "flipped.db"
    flipped.write_bytes(data[:5000] + bytes([data[5000] ^ 0xFF]) + data[5001:])
    truncated = tmp_path / "truncated.db"
    truncated.write_bytes(data[: len(data) // 2])
    port = free_port()
    common = (f"--initial-cluster=default=http://127.0.0.1:{port}",
              f"--initial-advertise-peer-urls=http://127.0.0.1:{port}")  # fmt: skip
    done = quorumctl("127.0.0.1:1", "snapshot", "restore", str(flipped), *common,
                     f"--data-dir={tmp_path / 'a'}")  # fmt: skip
    assert done.returncode == 1 and "Error: expected sha256 [" in done.stderr
    assert not (tmp_path / "a").exists()
    done = quorumctl("127.0.0.1:1", "snapshot", "restore", str(truncated), *common,
                     f"--data-dir={tmp_path / 'b'}")  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == "Error: snapshot missing hash but --skip-hash-check=false"
    done = quorumctl("127.0.0.1:1", "snapshot", "restore", str(truncated), *common, "--skip-hash-check",
                     f"--data-dir={tmp_path / 'c'}")  # fmt: skip
    assert done.returncode == 1 and "snapshot file is truncated" in done.stderr
    done = quorumctl("127.0.0.1:1", "snapshot", "status", str(truncated))
    assert done.returncode == 1 and "snapshot file is truncated" in done.stderr
    done = quorumctl("127.0.0.1:1", "snapshot", "status", str(snap), "-w", "json")
    status = json.loads(done.stdout)
    assert status["revision"] == 2 and status["totalSize"] == len(data) - 32


RESTORE_ARG_ERRORS = [
    ("--name=a", "--initial-cluster=a=http://127.0.0.1:1", "--initial-advertise-peer-urls=http://127.0.0.1:2"),
    ("--name=a", "--initial-cluster=a=http://127.0.0.1:1",
     "--initial-advertise-peer-urls=http://127.0.0.1:2,http://127.0.0.1:3"),
    ("--name=a", "--initial-cluster=a=http://127.0.0.1:1,b=http://127.0.0.1:1",
     "--initial-advertise-peer-urls=http://127.0.0.1:1"),
    ("--name=a", "--initial-cluster=a=bad", "--initial-advertise-peer-urls=http://127.0.0.1:1"),
    ("--name=zz", "--initial-cluster=a=http://127.0.0.1:1"),
    ("--data-dir={existing}",),
    (),
]  # fmt: skip


@pytest.mark.parametrize("args", RESTORE_ARG_ERRORS, ids=lambda a: " ".join(a) or "no-args")
def test_restore_argument_errors_match_etcdctl(tmp_path: Path, args: tuple[str, ...]) -> None:
    require_etcdctl()
    (tmp_path / "existing").mkdir()
    snap = tmp_path / "any.db"
    snap.write_bytes(b"\0" * 4128)
    argv = [a.format(existing=tmp_path / "existing") for a in args]
    if not any(a.startswith("--data-dir") for a in argv):
        argv.append(f"--data-dir={tmp_path / 'out'}")
    cmd = ["snapshot", "restore", str(snap), *argv] if args else ["snapshot", "restore"]
    theirs = etcdctl("127.0.0.1:1", *cmd)
    out, err = io.BytesIO(), io.BytesIO()  # quorumctl in-process: these fail before any connection
    code = ctl_main.run(cmd, io.BytesIO(), out, err, environ={"ETCDCTL_API": "3"})
    assert (code, out.getvalue().decode(), last_error(err.getvalue().decode())) == (
        theirs.returncode, theirs.stdout, last_error(theirs.stderr))
    assert not (tmp_path / "out").exists()


def last_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if not line.startswith('{"level"')]
    return lines[-1] if lines else ""
