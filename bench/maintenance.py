"""Defrag and snapshot-save time on a 1 GiB backend, Quorum against real etcd.

Usage:
    python bench/maintenance.py                    # both subjects, 1 GiB, appends to docs/performance.md
    python bench/maintenance.py --gib 0.2 --no-write --subjects quorum

For each subject and round (order alternating): a fresh single node (quota 8 GiB) is filled
over gRPC with distinct keys holding 1 MB values until `endpoint status` reports a database of at
least the target size; then the real `etcdctl snapshot save` is timed (the server copies and
streams the database, the client writes and fsyncs it); then the older half of the keys is
deleted, the store compacted (physically), and `etcdctl defrag` timed, with the database size
before and after. Load average is recorded before and after each run because the machine is
shared. This is a measurement tool, not a test.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from cluster.testing.procs import etcdctl, make_node  # noqa: E402
from cluster.testing.rawkv import RawKV  # noqa: E402

VALUE = os.urandom(1_000_000)
FLAGS = ("--quota-backend-bytes=8589934592", "--snapshot-count=100000")


@dataclass
class Result:
    subject: str
    db_bytes: int
    keys: int
    fill_s: float
    snapshot_s: float
    snapshot_bytes: int
    defrag_s: float
    before_defrag: int
    after_defrag: int
    load_before: str
    load_after: str


def _status(endpoint: str) -> dict:
    done = etcdctl(endpoint, "endpoint", "status", "-w", "json", timeout=120)
    return json.loads(done.stdout)[0]["Status"]


def _fill(endpoint: str, target: int, writers: int = 4) -> tuple[int, float]:
    started = time.perf_counter()
    counter = iter(range(10**9))
    lock = threading.Lock()
    done = threading.Event()
    written = [0]

    def writer() -> None:
        with RawKV(endpoint) as kv:
            while not done.is_set():
                with lock:
                    i = next(counter)
                kv.put(b"bench/%08d" % i, VALUE, timeout=60)
                with lock:
                    written[0] += 1

    threads = [threading.Thread(target=writer) for _ in range(writers)]
    for t in threads:
        t.start()
    try:
        while _status(endpoint)["dbSize"] < target:
            time.sleep(1.0)
    finally:
        done.set()
        for t in threads:
            t.join(120)
    return written[0], time.perf_counter() - started


def _timed(*args: str, endpoint: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    done = etcdctl(endpoint, *args, "--command-timeout=600s", timeout=900)
    took = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"etcdctl {' '.join(args)} failed: {done.stderr}")
    return took, done


def run_subject(kind: str, target: int, scratch: Path) -> Result:
    node = make_node(kind, flags=list(FLAGS))
    try:
        node.start(timeout=60)
        load_before = _loadavg()
        keys, fill_s = _fill(node.endpoint, target)
        db = _status(node.endpoint)["dbSize"]
        snap = scratch / f"{kind}.db"
        snapshot_s, _ = _timed("snapshot", "save", str(snap), endpoint=node.endpoint)
        snap_bytes = snap.stat().st_size
        snap.unlink()
        etcdctl(node.endpoint, "del", "bench/", f"bench/{keys // 2:08d}", timeout=300)  # the older half
        rev = _status(node.endpoint)["header"]["revision"]
        _timed("compact", str(rev), "--physical", endpoint=node.endpoint)
        before = _status(node.endpoint)["dbSize"]
        defrag_s, _ = _timed("defrag", endpoint=node.endpoint)
        after = _status(node.endpoint)["dbSize"]
        return Result(kind, db, keys, fill_s, snapshot_s, snap_bytes, defrag_s, before, after,
                      load_before, _loadavg())  # fmt: skip
    finally:
        node.close()


def _loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _mb(n: int) -> str:
    return f"{n / 1e6:.0f} MB"


def table(results: list[Result]) -> str:
    lines = [
        "| subject | db at fill | keys (1 MB) | snapshot save | snapshot file | defrag "
        "| db before → after defrag | load avg before / after |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.subject} | {_mb(r.db_bytes)} | {r.keys} | {r.snapshot_s:.2f} s "
            f"| {_mb(r.snapshot_bytes)} | {r.defrag_s:.2f} s "
            f"| {_mb(r.before_defrag)} → {_mb(r.after_defrag)} "
            f"| {r.load_before} / {r.load_after} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gib", type=float, default=1.0, help="database size to fill to (GiB)")
    parser.add_argument("--subjects", default="etcd,quorum")
    parser.add_argument("--rounds", type=int, default=2, help="runs per subject, order alternating")
    parser.add_argument("--no-write", action="store_true", help="do not append to docs/performance.md")
    args = parser.parse_args()
    target = int(args.gib * (1 << 30))
    results = []
    subjects = args.subjects.split(",")
    with tempfile.TemporaryDirectory(prefix="bench-maint-") as scratch:
        for round_ in range(args.rounds):
            for kind in subjects if round_ % 2 == 0 else subjects[::-1]:  # alternate: drift hits both
                result = run_subject(kind, target, Path(scratch))
                print(result, flush=True)
                results.append(result)
    text = table(results)
    print(text)
    if args.no_write:
        return
    command = "python bench/maintenance.py " + " ".join(sys.argv[1:])
    section = (
        f"\n## {dt.date.today().isoformat()} — defrag and snapshot save on a {args.gib:g} GiB backend\n\n"
        f"Command: `{command.strip()}` ({platform.node()}, {os.cpu_count()} cores, shared machine).\n"
        "Each subject: fresh single node, filled with distinct keys of 1 MB values until `endpoint status` "
        "shows the target size; `etcdctl snapshot save` timed; then the older half of the keys deleted, "
        "compacted (physical) and `etcdctl defrag` timed.\n\n"
        f"{text}\n"
    )
    with open(REPO_ROOT / "docs" / "performance.md", "a") as f:
        f.write(section)


if __name__ == "__main__":
    main()
