"""Compare Quorum with real etcd: the same ebench command against each, fresh nodes, alternating.

Usage:
    python bench/compare.py --ebench PATH            # or EBENCH=PATH python bench/compare.py
    python bench/compare.py --subjects etcd,etcd     # validate the harness: etcd against itself
    python bench/compare.py --workloads put-64c --rounds 3 --scale 0.2 --no-write

For every workload and round, each subject gets a brand-new single node (fresh data dir, same flags, on
loopback) and the identical ebench command line; subjects alternate within a round so that drift in the
machine's load affects both. The table shows each run, then per workload the median ops/s, p50 and p99
of each subject and the ratio of the second subject to the first (quorum/etcd by default). Unless
--no-write is given, a dated section with the command lines and the table is appended to
docs/performance.md. This is a measurement tool, not a test.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from cluster.testing.procs import NodeProcess, etcd_binary, make_node  # noqa: E402
from cluster.testing.rawkv import RawKV  # noqa: E402

ENDPOINT = "{endpoint}"


@dataclass(frozen=True, slots=True)
class Workload:
    name: str
    args: str
    total: int
    preload_range_key: bool = False

    def command(self, ebench: str, endpoint: str, scale: float) -> list[str]:
        total = max(100, int(self.total * scale))
        return [ebench, *shlex.split(self.args), "--endpoints", endpoint, "--total", str(total)]


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload(
            "put-64c",
            "put --conns 8 --clients 64 --val-size 256 --sequential-keys --key-space-size 100000",
            50_000,
        ),
        Workload(
            "put-1c",
            "put --conns 1 --clients 1 --val-size 256 --sequential-keys --key-space-size 100000",
            5_000,
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
    )
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

    @property
    def server_cpu_us_per_op(self) -> float:
        return self.server_cpu_s / self.ops * 1e6 if self.ops else 0.0


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and its reaped children, from /proc (0 where unavailable)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def start_subject(kind: str, flags: list[str]) -> NodeProcess:
    node = make_node(kind.split("#")[0], flags=flags)
    node.start(timeout=60)
    return node


def measure(
    ebench: str,
    workload: Workload,
    subject: str,
    round_no: int,
    endpoint: str,
    scale: float,
    server_pids: Sequence[int],
) -> Run:
    """Run ``workload`` with ebench against ``endpoint``; CPU is summed over ``server_pids``."""
    cmd = workload.command(ebench, endpoint, scale)
    cpu_before = sum(process_cpu_seconds(pid) for pid in server_pids)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    cpu = sum(process_cpu_seconds(pid) for pid in server_pids) - cpu_before
    if done.returncode != 0 or not done.stdout.strip():
        raise RuntimeError(f"ebench failed ({done.returncode}): {done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    shown = shlex.join(["ebench", *cmd[1:]]).replace(endpoint, ENDPOINT)
    return Run(
        workload.name,
        subject,
        round_no,
        float(result["ops_per_s"]),
        float(result["p50_ms"]),
        float(result["p99_ms"]),
        int(result.get("errors", 0)),
        int(result["ops"]),
        cpu,
        shown,
    )


def run_one(
    ebench: str, workload: Workload, subject: str, round_no: int, flags: list[str], scale: float
) -> Run:
    node = start_subject(subject, flags)
    try:
        if workload.preload_range_key:
            with RawKV(node.endpoint) as kv:
                kv.put(b"foo", b"v" * 256)
        assert node.pid is not None
        return measure(ebench, workload, subject, round_no, node.endpoint, scale, [node.pid])
    finally:
        node.close()


def render_runs(runs: list[Run]) -> str:
    lines = [
        "| workload | subject | round | ops/s | p50 ms | p99 ms | errors | server CPU µs/op |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r.workload} | {r.subject} | {r.round} | {r.ops_per_s:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} "
        f"| {r.errors} | {r.server_cpu_us_per_op:.0f} |"
        for r in runs
    ]
    return "\n".join(lines)


def _median(runs: list[Run], workload: str, subject: str, attr: str) -> float:
    values = [float(getattr(r, attr)) for r in runs if r.workload == workload and r.subject == subject]
    return statistics.median(values) if values else float("nan")


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "n/a"


def render_summary(runs: list[Run], subjects: list[str]) -> str:
    """Medians per subject and the ratio of the last subject to the first (quorum/etcd)."""
    base, other = subjects[0], subjects[-1]
    lines = [
        f"| workload | {base} ops/s | {other} ops/s | ops/s {other}/{base} | p50 ms {base} / {other} "
        f"| p99 ms {base} / {other} | p50 ratio | p99 ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in dict.fromkeys(r.workload for r in runs):
        ops = [_median(runs, name, s, "ops_per_s") for s in (base, other)]
        p50 = [_median(runs, name, s, "p50_ms") for s in (base, other)]
        p99 = [_median(runs, name, s, "p99_ms") for s in (base, other)]
        lines.append(
            f"| {name} | {ops[0]:,.0f} | {ops[1]:,.0f} | {_ratio(ops[1], ops[0])} "
            f"| {p50[0]:.2f} / {p50[1]:.2f} | {p99[0]:.2f} / {p99[1]:.2f} "
            f"| {_ratio(p50[1], p50[0])} | {_ratio(p99[1], p99[0])} |"
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


def report_section(
    runs: list[Run], subjects: list[str], args: argparse.Namespace, flags: list[str], load_before: float
) -> str:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    commands = list(dict.fromkeys(r.command for r in runs))
    return "\n".join(
        [
            f"## {now}: {' vs '.join(dict.fromkeys(subjects))}",
            "",
            f"Machine: {environment()}; 1-minute load average {load_before:.1f} before, "
            f"{os.getloadavg()[0]:.1f} after (above the CPU count means other work shared the machine).",
            f"Rounds: {args.rounds} per subject, alternating, a fresh single node per run; "
            f"node flags: `{' '.join(flags) or '(defaults)'}`; ratios use medians.",
            "",
            "Command lines (`{endpoint}` is the fresh node's client address):",
            "",
            *[f"    {c}" for c in commands],
            "",
            render_summary(runs, subjects),
            "",
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
    parser.add_argument("--rounds", type=int, default=2, help="runs per subject and workload (>= 2)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every --total by this")
    parser.add_argument("--node-flag", action="append", default=[], help="extra flag for every node")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "docs" / "performance.md")
    parser.add_argument("--no-write", action="store_true", help="print only, do not append to --output")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.ebench or not os.access(args.ebench, os.X_OK):
        print("error: give the ebench binary with --ebench PATH or EBENCH=PATH", file=sys.stderr)
        return 2
    kinds = [s.strip() for s in args.subjects.split(",") if s.strip()]
    # The same kind twice (etcd,etcd validates the harness) gets distinct labels.
    subjects = [k if kinds.count(k) == 1 else f"{k}#{i + 1}" for i, k in enumerate(kinds)]
    workloads = [WORKLOADS[w.strip()] for w in args.workloads.split(",") if w.strip()]
    runs: list[Run] = []
    load_before = os.getloadavg()[0]
    for workload in workloads:
        for round_no in range(1, args.rounds + 1):
            order = subjects if round_no % 2 else list(reversed(subjects))
            for subject in order:
                run = run_one(args.ebench, workload, subject, round_no, args.node_flag, args.scale)
                runs.append(run)
                print(
                    f"{workload.name:12} {subject:10} round {round_no}: {run.ops_per_s:10,.0f} ops/s "
                    f"p50 {run.p50_ms:6.2f} ms p99 {run.p99_ms:6.2f} ms errors {run.errors} "
                    f"server CPU {run.server_cpu_us_per_op:.0f} µs/op",
                    flush=True,
                )
    print()
    print(render_summary(runs, subjects))
    section = report_section(runs, subjects, args, args.node_flag, load_before)
    if not args.no_write:
        append_report(args.output, section)
        print(f"\nappended to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
