"""Compare Quorum with real etcd: the same ebench command against each, fresh clusters, alternating.

Usage:
    python bench/compare.py --ebench PATH            # or EBENCH=PATH python bench/compare.py
    python bench/compare.py --subjects etcd,etcd     # validate the harness: etcd against itself
    python bench/compare.py --workloads put-64c --rounds 3 --scale 0.2 --no-write

The 3-node benchmarks of issue 3 (puts and ranges) and issue 4 (watch fan-out, lease keep-alive), each
run on a quiet machine and appended to docs/performance.md:

    EBENCH=$(../shared/bench/build-ebench.sh) python bench/compare.py --members 3 \
        --workloads put-64c,put-1c,range-s-64c,range-l-64c
    EBENCH=$(../shared/bench/build-ebench.sh) python bench/compare.py --members 3 \
        --workloads watch-1000w,lease-keepalive-1000

For every workload and round, each subject gets a brand-new cluster of --members members (default 1:
a single node), named m1..mN, on 127.0.0.1 with distinct free ports, fresh data dirs and the same
flags, and the identical ebench command line; subjects alternate within a round so that drift in the
machine's load affects both. ebench gets every member's client address: its connection i dials member
i mod N, so the 8-connection workloads spread over all members (etcd's "to all members"), while the
workloads with one writer whose latency would depend on which member won the election (put-1c,
watch-1000w) add --target-leader in a multi-member cluster. The table shows each run (with the leader
and any raft term change during it: an election mid-run), then per workload the median ops/s, p50 and
p99 of each subject, the ratio of the second subject to the first (quorum/etcd by default) and, where an
issue sets one for the topology (FLOORS), the floor and whether the medians meet it. Unless --no-write is
given, a dated section with the topology, the command lines and the tables is appended to
docs/performance.md. This is a measurement tool, not a test.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench import ebench_tls  # noqa: E402
from cluster.testing.certs import CertFiles, TestCA  # noqa: E402
from cluster.testing.ports import free_port  # noqa: E402
from cluster.testing.procs import NodeProcess, NodeStartError, cluster_of, etcd_binary  # noqa: E402
from cluster.testing.rawkv import RawKV  # noqa: E402

ENDPOINTS = "{endpoints}"


@dataclass(frozen=True, slots=True)
class Workload:
    """One ebench command; ``total`` (times --scale) goes to ``scaled_flag``, at least ``minimum``."""

    name: str
    args: str
    total: int
    preload_range_key: bool = False
    scaled_flag: str = "--total"
    minimum: int = 100
    leader_only: bool = False
    """One writer whose latency depends on the member it talks to: --target-leader when N > 1."""
    measures: str = ""
    """What ops and latency count when they are not plain request round trips."""
    auth: bool = False
    """Enable auth (root user) before the run; ebench authenticates as root and sends its token."""
    tls: bool = False
    """Clients over TLS: the members also serve an https client URL (server certificate from a test
    CA), which ebench (built with TLS flags, bench/ebench_tls.py) dials, verifying it with the CA."""

    def command(self, ebench: str, endpoints: str, scale: float, target_leader: bool = False) -> list[str]:
        count = max(self.minimum, int(self.total * scale))
        leader = ["--target-leader"] if target_leader else []
        user = ["--user", AUTH_USER] if self.auth else []
        tls = ["--cacert", str(bench_pki().ca)] if self.tls else []
        if self.tls:
            ebench = str(ebench_tls.build())
        return [
            ebench,
            *shlex.split(self.args),
            *user,
            *tls,
            "--endpoints",
            endpoints,
            *leader,
            self.scaled_flag,
            str(count),
        ]


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload(
            "put-64c",
            "put --conns 8 --clients 64 --val-size 256 --sequential-keys --key-space-size 100000",
            50_000,
        ),
        Workload(
            "put-64c-auth",
            "put --conns 8 --clients 64 --val-size 256 --sequential-keys --key-space-size 100000",
            50_000,
            auth=True,
            measures="put-64c with auth enabled: every request carries root's simple token",
        ),
        Workload(
            "put-64c-tls",
            "put --conns 8 --clients 64 --val-size 256 --sequential-keys --key-space-size 100000",
            50_000,
            tls=True,
            measures="put-64c over TLS (server certificate verified by the client, no client certificate)",
        ),
        Workload(
            "put-1c-tls",
            "put --conns 1 --clients 1 --val-size 256 --sequential-keys --key-space-size 100000",
            5_000,
            leader_only=True,
            tls=True,
            measures="put-1c over TLS",
        ),
        Workload(
            "put-1c",
            "put --conns 1 --clients 1 --val-size 256 --sequential-keys --key-space-size 100000",
            5_000,
            leader_only=True,
        ),
        Workload(
            "range-s-64c",
            "range foo --consistency s --conns 8 --clients 64",
            100_000,
            preload_range_key=True,
        ),
        Workload(
            "range-l-64c",
            "range foo --consistency l --conns 8 --clients 64",
            100_000,
            preload_range_key=True,
        ),
        Workload(
            "watch-1000w",
            "watch --watchers 1000 --streams 10 --key k --put-clients 1",
            100,
            scaled_flag="--puts",
            minimum=10,
            leader_only=True,
            measures="ops/s = events delivered per second (watchers x puts, from the first put to the "
            "last event); latency = put issued -> event received; errors include missing events",
        ),
        Workload(
            "lease-keepalive-1000",
            # The cluster is thrown away after the run: revoking 1,000 leases one by one is not measured
            # and would only lengthen it.
            "lease-keepalive --leases 1000 --conns 8 --clients 64 --revoke=false",
            100_000,
            measures="ops/s = keep-alive round trips per second (one LeaseKeepAlive stream per client, "
            "lockstep); the 1,000 grants before it are not counted",
        ),
    )
}


@dataclass(frozen=True, slots=True)
class Floor:
    """What an issue demands of the second subject against the first, judged on the medians."""

    metric: str
    """"ops_per_s": the ratio must be at least ``ratio``; "p50_ms": at most ``ratio``."""
    ratio: float
    source: str

    def meets(self, ratio: float) -> bool | None:
        if math.isnan(ratio):
            return None
        return ratio >= self.ratio if self.metric == "ops_per_s" else ratio <= self.ratio

    def describe(self) -> str:
        bound = f"ops/s >= {self.ratio:g}x" if self.metric == "ops_per_s" else f"p50 <= {self.ratio:g}x"
        return f"{bound} ({self.source})"


# Floors by cluster size: issue 2 for a single node, issues 3 and 4 for three members.
FLOORS: dict[int, dict[str, Floor]] = {
    1: {
        "put-64c": Floor("ops_per_s", 0.25, "issue 2"),
        "range-s-64c": Floor("ops_per_s", 0.25, "issue 2"),
    },
    3: {
        "put-64c": Floor("ops_per_s", 0.5, "issue 3"),
        "put-1c": Floor("p50_ms", 2.0, "issue 3"),
        "range-l-64c": Floor("ops_per_s", 0.5, "issue 3"),
        "watch-1000w": Floor("ops_per_s", 0.3, "issue 4"),
        "lease-keepalive-1000": Floor("ops_per_s", 0.5, "issue 4"),
    },
}


@dataclass(frozen=True, slots=True)
class Run:
    workload: str
    subject: str
    round: int
    ops_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    ops: int
    server_cpu_s: float
    command: str
    leader: str = ""
    term_changes: int = 0
    """Raft term increase during the run: non-zero means an election (attempt) disturbed it."""

    @property
    def server_cpu_us_per_op(self) -> float:
        return self.server_cpu_s / self.ops * 1e6 if self.ops else 0.0


def run_from_result(
    result: dict[str, Any],
    workload: str,
    subject: str,
    round_no: int,
    command: str,
    server_cpu_s: float = 0.0,
    leader: str = "",
    term_changes: int = 0,
) -> Run:
    """A Run from ebench's JSON line and what the harness saw of the cluster around it."""
    return Run(
        workload,
        subject,
        round_no,
        float(result["ops_per_s"]),
        float(result["p50_ms"]),
        float(result["p99_ms"]),
        int(result.get("errors", 0)),
        int(result["ops"]),
        server_cpu_s,
        command,
        leader,
        term_changes,
    )


@dataclass(frozen=True, slots=True)
class Failure:
    """A run that produced no result (the cluster did not start, ebench failed or timed out)."""

    workload: str
    subject: str
    round: int
    message: str


@dataclass(frozen=True, slots=True)
class Settings:
    """What every run of one invocation shares."""

    ebench: str
    members: int = 1
    flags: tuple[str, ...] = ()
    scale: float = 1.0
    target_leader: bool = False
    """Send every workload's traffic to the leader, not only the leader-only ones."""

    def command(self, workload: Workload, endpoints: str) -> list[str]:
        to_leader = self.target_leader or (workload.leader_only and self.members > 1)
        return workload.command(self.ebench, endpoints, self.scale, to_leader)

    def shown(self, workload: Workload) -> str:
        """The command line as the report prints it: ``ebench``, endpoints as a placeholder."""
        words = ["ebench", *self.command(workload, ENDPOINTS)[1:]]
        return " ".join(w if w == ENDPOINTS else shlex.quote(w) for w in words)


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and its reaped children, from /proc (0 where unavailable)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class BenchPKI:
    ca: Path
    server: CertFiles


_pki: BenchPKI | None = None


def bench_pki() -> BenchPKI:
    """One CA and a server certificate for 127.0.0.1, made on first use, for the TLS workloads."""
    global _pki
    if _pki is None:
        ca = TestCA(Path(tempfile.mkdtemp(prefix="quorum-bench-pki-")))
        _pki = BenchPKI(ca.cert, ca.issue("server", hosts=("127.0.0.1", "localhost")))
    return _pki


class FreshCluster:
    """A brand-new cluster of one kind for one run: members m1..mN on loopback, all closed on exit.
    With ``tls`` every member also serves clients over TLS on a second port (`tls_endpoints`); the
    plain one stays for the harness's own calls (leader, preload, auth setup)."""

    def __init__(self, kind: str, members: int, flags: tuple[str, ...], tls: bool = False) -> None:
        self.nodes: list[NodeProcess] = cluster_of(kind, members, flags=flags)
        self.tls_ports: list[int] = []
        if tls:
            pki = bench_pki()
            for node in self.nodes:
                port = free_port(node.host)
                self.tls_ports.append(port)
                node.flags += [
                    f"--listen-client-urls={node.client_url},https://{node.host}:{port}",
                    f"--cert-file={pki.server.cert}",
                    f"--key-file={pki.server.key}",
                ]

    def start(self) -> FreshCluster:
        """Start every member, then wait until each serves and one of them leads."""
        try:
            for node in self.nodes:
                node.start(wait=False)
            for node in self.nodes:
                node.wait_ready(timeout=60)
            self.leader(timeout=30)
        except BaseException:
            self.close()
            raise
        return self

    def __enter__(self) -> FreshCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for node in self.nodes:
            node.close()

    @property
    def endpoints(self) -> str:
        return ",".join(n.endpoint for n in self.nodes)

    @property
    def tls_endpoints(self) -> str:
        return ",".join(f"{n.host}:{port}" for n, port in zip(self.nodes, self.tls_ports, strict=True))

    def cpu_seconds(self) -> float:
        return sum(process_cpu_seconds(n.pid) for n in self.nodes if n.pid is not None)

    def leader(self, timeout: float = 10.0) -> tuple[str, int]:
        """The leader's member name and the highest raft term any member reports."""
        deadline = time.monotonic() + timeout
        while True:
            name, term = "", 0
            for node in self.nodes:
                try:
                    with RawKV(node.endpoint) as kv:
                        st = kv.status(timeout=2)
                except grpc.RpcError:
                    continue
                term = max(term, st.raft_term)
                if st.is_leader:
                    name = node.name
            if name or time.monotonic() > deadline:
                return name or "?", term
            time.sleep(0.1)


def start_cluster(kind: str, settings: Settings, attempts: int = 3, tls: bool = False) -> FreshCluster:
    """Start a fresh cluster, retrying when a member fails to start (another suite on this machine may
    take a free port between our choosing it and the member binding it)."""
    for attempt in range(attempts):
        try:
            return FreshCluster(kind.split("#")[0], settings.members, settings.flags, tls).start()
        except NodeStartError:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


AUTH_USER = "root:rootpw"


def enable_auth(endpoint: str) -> None:
    """A root user with the root role, then auth enable (the etcdctl commands an operator runs)."""
    from cluster.testing.procs import etcdctl

    for args in (("user", "add", AUTH_USER), ("user", "grant-role", "root", "root"), ("auth", "enable")):
        done = etcdctl(endpoint, *args, timeout=30)
        if done.returncode != 0:
            raise RuntimeError(f"etcdctl {' '.join(args)} failed: {done.stderr}")


def run_ebench(cmd: Sequence[str]) -> dict[str, Any]:
    """Run one ebench command line; its JSON result."""
    done = subprocess.run(list(cmd), capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0 or not done.stdout.strip():
        raise RuntimeError(f"ebench failed ({done.returncode}): {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def measure(
    ebench: str,
    workload: Workload,
    subject: str,
    round_no: int,
    endpoint: str,
    scale: float,
    server_pids: Sequence[int],
) -> Run:
    """Run ``workload`` against ``endpoint`` (no cluster management); CPU summed over ``server_pids``."""
    cmd = workload.command(ebench, endpoint, scale)
    cpu_before = sum(process_cpu_seconds(pid) for pid in server_pids)
    result = run_ebench(cmd)
    cpu = sum(process_cpu_seconds(pid) for pid in server_pids) - cpu_before
    shown = shlex.join(["ebench", *cmd[1:]]).replace(endpoint, ENDPOINTS)
    return run_from_result(result, workload.name, subject, round_no, shown, server_cpu_s=cpu)


def run_one(settings: Settings, workload: Workload, subject: str, round_no: int) -> Run:
    with start_cluster(subject, settings, tls=workload.tls) as cluster:
        if workload.preload_range_key:
            with RawKV(cluster.nodes[0].endpoint) as kv:
                kv.put(b"foo", b"v" * 256)
        if workload.auth:
            enable_auth(cluster.nodes[0].endpoint)
        cmd = settings.command(workload, cluster.tls_endpoints if workload.tls else cluster.endpoints)
        leader, term_before = cluster.leader()
        cpu_before = cluster.cpu_seconds()
        result = run_ebench(cmd)
        cpu = cluster.cpu_seconds() - cpu_before
        _, term_after = cluster.leader()
        return run_from_result(
            result,
            workload.name,
            subject,
            round_no,
            settings.shown(workload),
            server_cpu_s=cpu,
            leader=leader,
            term_changes=max(0, term_after - term_before),
        )


def render_runs(runs: list[Run]) -> str:
    lines = [
        "| workload | subject | round | ops/s | p50 ms | p99 ms | errors | server CPU µs/op | leader "
        "| term changes |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r.workload} | {r.subject} | {r.round} | {r.ops_per_s:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} "
        f"| {r.errors} | {r.server_cpu_us_per_op:.0f} | {r.leader or '?'} | {r.term_changes} |"
        for r in runs
    ]
    return "\n".join(lines)


def _median(runs: list[Run], workload: str, subject: str, attr: str) -> float:
    values = [float(getattr(r, attr)) for r in runs if r.workload == workload and r.subject == subject]
    return statistics.median(values) if values else float("nan")


def ratio(a: float, b: float) -> float:
    """a / b, NaN when b is zero or either is missing."""
    return a / b if b and not math.isnan(a) and not math.isnan(b) else float("nan")


def _fmt_ratio(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f}"


@dataclass(frozen=True, slots=True)
class Summary:
    """Medians of one workload for the base subject and the other, and the floor set for it."""

    workload: str
    ops: tuple[float, float]
    p50: tuple[float, float]
    p99: tuple[float, float]
    floor: Floor | None

    def ratio_of(self, metric: str) -> float:
        base, other = {"ops_per_s": self.ops, "p50_ms": self.p50, "p99_ms": self.p99}[metric]
        return ratio(other, base)

    @property
    def meets_floor(self) -> bool | None:
        return self.floor.meets(self.ratio_of(self.floor.metric)) if self.floor else None


def summarize(runs: list[Run], subjects: list[str], floors: dict[str, Floor]) -> list[Summary]:
    """Per workload, in the order run: medians of the first subject (the base) and the last."""
    base, other = subjects[0], subjects[-1]

    def pair(name: str, attr: str) -> tuple[float, float]:
        return _median(runs, name, base, attr), _median(runs, name, other, attr)

    return [
        Summary(name, pair(name, "ops_per_s"), pair(name, "p50_ms"), pair(name, "p99_ms"), floors.get(name))
        for name in dict.fromkeys(r.workload for r in runs)
    ]


def _verdict(summary: Summary) -> str:
    meets = summary.meets_floor
    if summary.floor is None:
        return "-"
    return "n/a" if meets is None else ("yes" if meets else "no")


def render_summary(summaries: list[Summary], subjects: list[str]) -> str:
    """Medians per subject, the ratios of the last subject to the first (quorum/etcd) and the floors."""
    base, other = subjects[0], subjects[-1]
    lines = [
        f"| workload | {base} ops/s | {other} ops/s | ops/s {other}/{base} | p50 ms {base} / {other} "
        f"| p99 ms {base} / {other} | p50 ratio | p99 ratio | floor | meets floor |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        lines.append(
            f"| {s.workload} | {s.ops[0]:,.0f} | {s.ops[1]:,.0f} | {_fmt_ratio(s.ratio_of('ops_per_s'))} "
            f"| {s.p50[0]:.2f} / {s.p50[1]:.2f} | {s.p99[0]:.2f} / {s.p99[1]:.2f} "
            f"| {_fmt_ratio(s.ratio_of('p50_ms'))} | {_fmt_ratio(s.ratio_of('p99_ms'))} "
            f"| {s.floor.describe() if s.floor else '-'} | {_verdict(s)} |"
        )
    return "\n".join(lines)


def environment() -> str:
    etcd = etcd_binary() or "etcd"
    try:
        version = subprocess.run([etcd, "--version"], capture_output=True, text=True, timeout=10).stdout
        etcd_version = version.splitlines()[0] if version else "unknown"
    except (OSError, subprocess.TimeoutExpired):
        etcd_version = "unknown"
    try:
        commit = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        commit = "unknown"
    return (
        f"{os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()}, "
        f"{etcd_version}, quorum commit {commit or 'unknown'}"
    )


def topology(members: int) -> str:
    if members == 1:
        return "a fresh single node per run"
    return (
        f"a fresh {members}-member cluster per run (m1..m{members} on 127.0.0.1, distinct free ports, "
        f"fresh data dirs, started together); ebench's `--endpoints` lists every member, m1 first, and "
        f"its connection i dials member i mod {members}; `--target-leader` where the command shows it"
    )


def report_section(
    runs: list[Run],
    subjects: list[str],
    settings: Settings,
    rounds: int,
    workloads: list[Workload],
    load_before: float,
    failures: list[Failure],
) -> str:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    commands = list(dict.fromkeys(r.command for r in runs))
    shape = "single node" if settings.members == 1 else f"{settings.members} members"
    measures = [f"- {w.name}: {w.measures}." for w in workloads if w.measures]
    summaries = summarize(runs, subjects, FLOORS.get(settings.members, {}))
    return "\n".join(
        [
            f"## {now}: {' vs '.join(dict.fromkeys(subjects))}, {shape}",
            "",
            f"Machine: {environment()}; 1-minute load average {load_before:.1f} before, "
            f"{os.getloadavg()[0]:.1f} after (above the CPU count means other work shared the machine).",
            f"Topology: {topology(settings.members)}.",
            f"Rounds: {rounds} per subject, alternating; "
            f"node flags: `{' '.join(settings.flags) or '(defaults)'}`; ratios and floors use medians.",
            "",
            "Command lines (`{endpoints}` is the client addresses of the fresh node or cluster):",
            "",
            *[f"    {c}" for c in commands],
            "",
            *([*measures, ""] if measures else []),
            render_summary(summaries, subjects),
            "",
            *[
                f"Failed, left out of the medians: {f.workload} {f.subject} round {f.round}: {f.message}"
                for f in failures
            ],
            *([""] if failures else []),
            "<details><summary>every run</summary>",
            "",
            render_runs(runs),
            "",
            "</details>",
            "",
        ]
    )


def append_report(path: Path, section: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write("\n" + section)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ebench", default=os.environ.get("EBENCH"), help="ebench binary (or $EBENCH)")
    parser.add_argument(
        "--subjects", default="etcd,quorum", help="comma-separated node kinds, first is the base"
    )
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help=f"any of {', '.join(WORKLOADS)}")
    parser.add_argument("--members", type=int, default=1, help="members per cluster (1 = single node)")
    parser.add_argument(
        "--target-leader", action="store_true", help="send every workload's traffic to the leader"
    )
    parser.add_argument("--rounds", type=int, default=2, help="runs per subject and workload (>= 2)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every --total by this")
    parser.add_argument("--node-flag", action="append", default=[], help="extra flag for every node")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "docs" / "performance.md")
    parser.add_argument("--no-write", action="store_true", help="print only, do not append to --output")
    return parser.parse_args(argv)


def subject_labels(subjects: str) -> list[str]:
    """The node kinds in order; the same kind twice (etcd,etcd validates the harness) gets labels kind#i."""
    kinds = [s.strip() for s in subjects.split(",") if s.strip()]
    return [k if kinds.count(k) == 1 else f"{k}#{i + 1}" for i, k in enumerate(kinds)]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.ebench or not os.access(args.ebench, os.X_OK):
        print("error: give the ebench binary with --ebench PATH or EBENCH=PATH", file=sys.stderr)
        return 2
    settings = Settings(args.ebench, args.members, tuple(args.node_flag), args.scale, args.target_leader)
    subjects = subject_labels(args.subjects)
    workloads = [WORKLOADS[w.strip()] for w in args.workloads.split(",") if w.strip()]
    runs: list[Run] = []
    failures: list[Failure] = []
    load_before = os.getloadavg()[0]
    for workload in workloads:
        for round_no in range(1, args.rounds + 1):
            order = subjects if round_no % 2 else list(reversed(subjects))
            for subject in order:
                try:
                    run = run_one(settings, workload, subject, round_no)
                except (RuntimeError, ValueError, KeyError, subprocess.TimeoutExpired) as exc:
                    message = " ".join(str(exc).split())[-300:]
                    failures.append(Failure(workload.name, subject, round_no, message))
                    print(f"{workload.name:20} {subject:8} round {round_no}: FAILED {message}", flush=True)
                    continue
                runs.append(run)
                print(
                    f"{workload.name:20} {subject:8} round {round_no}: {run.ops_per_s:10,.0f} ops/s "
                    f"p50 {run.p50_ms:7.2f} ms p99 {run.p99_ms:7.2f} ms errors {run.errors} "
                    f"server CPU {run.server_cpu_us_per_op:.0f} µs/op leader {run.leader} "
                    f"term changes {run.term_changes}",
                    flush=True,
                )
    print()
    print(render_summary(summarize(runs, subjects, FLOORS.get(args.members, {})), subjects))
    section = report_section(runs, subjects, settings, args.rounds, workloads, load_before, failures)
    if not args.no_write:
        append_report(args.output, section)
        print(f"\nappended to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
