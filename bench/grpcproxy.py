"""Quorum's gRPC proxy against etcd's, both in front of the same 3-member cluster (issue 9's benchmark).

Usage:
    python bench/grpcproxy.py --ebench PATH [--rounds 2] [--scale 1.0] [--workloads ...] [--no-write]
    EBENCH=PATH python bench/grpcproxy.py --cluster-kind etcd --workloads put-64c --scale 0.2 --no-write

One cluster (Quorum by default, or real etcd) runs for the whole invocation, with the key the range
workloads read preloaded; `quorum grpc-proxy start` and etcd 3.4's `etcd grpc-proxy start` both get the
members' client addresses as --endpoints (default flags otherwise: both cache serializable ranges). For
every workload and round each proxy takes the identical ebench command with the proxy's listen address
as the only endpoint, so everything ebench sends, the watch workload's puts included, goes through the
proxy; the order of the two alternates from round to round. Reported per workload: median ops/s, p50 and
p99 of each proxy, the ratios quorum proxy / etcd proxy, the proxy process's CPU per operation, and
issue 9's floors: puts >= 0.5x etcd's proxy, cached (serializable) ranges >= 1.0x, watch events/s
>= 0.5x with a p50 put-to-event latency no higher than etcd's proxy's. Unless --no-write, a dated
section is appended to docs/performance.md. This is a measurement tool, not a test.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
# Run as a script, this file's folder comes first on sys.path and its name would shadow the `grpcproxy`
# package; import from the repository root instead.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(REPO_ROOT))

from bench.compare import (  # noqa: E402
    WORKLOADS,
    Failure,
    Floor,
    FreshCluster,
    Run,
    Settings,
    Summary,
    Workload,
    _fmt_ratio,
    _median,
    append_report,
    environment,
    measure,
    render_runs,
    start_cluster,
    summarize,
)
from cluster.testing.rawkv import RawKV  # noqa: E402
from grpcproxy.testing import EtcdGrpcProxyProcess, GrpcProxyProcess  # noqa: E402

SUBJECTS = ("etcd-proxy", "quorum-proxy")
"""The base first: ratios are quorum proxy / etcd proxy."""
DEFAULT_WORKLOADS = ("put-64c", "range-s-64c", "watch-1000w")
RANGE_KEY = b"foo"
"""The hot key of compare.py's range workloads (`ebench range foo ...`)."""

FLOORS: dict[str, tuple[Floor, ...]] = {
    "put-64c": (Floor("ops_per_s", 0.5, "issue 9"),),
    "range-s-64c": (Floor("ops_per_s", 1.0, "issue 9"),),
    "watch-1000w": (Floor("ops_per_s", 0.5, "issue 9"), Floor("p50_ms", 1.0, "issue 9")),
}


def verdict(summary: Summary, floors: tuple[Floor, ...]) -> str:
    """Whether the medians meet every floor: "yes", "no" (one fails), "n/a" (a median is missing)."""
    if not floors:
        return "-"
    meets = [f.meets(summary.ratio_of(f.metric)) for f in floors]
    if False in meets:
        return "no"
    return "n/a" if None in meets else "yes"


def render_summary(runs: list[Run], floors: dict[str, tuple[Floor, ...]] = FLOORS) -> str:
    """Medians per proxy, quorum/etcd ratios, each proxy's own CPU per operation and the floors."""
    lines = [
        "| workload | etcd proxy ops/s | quorum proxy ops/s | ops/s quorum/etcd | p50 ms etcd / quorum "
        "| p50 quorum/etcd | p99 ms etcd / quorum | p99 quorum/etcd | proxy CPU µs/op etcd / quorum "
        "| floor | meets floor |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summarize(runs, list(SUBJECTS), {}):
        cpu = [_median(runs, s.workload, subject, "server_cpu_us_per_op") for subject in SUBJECTS]
        wanted = floors.get(s.workload, ())
        lines.append(
            f"| {s.workload} | {s.ops[0]:,.0f} | {s.ops[1]:,.0f} | {_fmt_ratio(s.ratio_of('ops_per_s'))} "
            f"| {s.p50[0]:.2f} / {s.p50[1]:.2f} | {_fmt_ratio(s.ratio_of('p50_ms'))} "
            f"| {s.p99[0]:.2f} / {s.p99[1]:.2f} | {_fmt_ratio(s.ratio_of('p99_ms'))} "
            f"| {cpu[0]:.0f} / {cpu[1]:.0f} | {'; '.join(f.describe() for f in wanted) or '-'} "
            f"| {verdict(s, wanted)} |"
        )
    return "\n".join(lines)


@contextmanager
def setup(
    ebench: str, cluster_kind: str, leader_only: bool = False
) -> Iterator[tuple[FreshCluster, dict[str, GrpcProxyProcess]]]:
    """The 3-member cluster with the range key preloaded, and both proxies in front of it: given every
    member, or (``leader_only``) only the leader. etcd's proxy balances its calls over all its
    endpoints while Quorum's sends them to one member, so with all three the two proxies reach
    different mixes of leader and followers; with the leader alone they do the same work."""
    cluster = start_cluster(cluster_kind, Settings(ebench, members=3))
    proxies: dict[str, GrpcProxyProcess] = {}
    try:
        with RawKV(cluster.nodes[0].endpoint) as kv:
            kv.put(RANGE_KEY, b"v" * 256)
        endpoints = [n.endpoint for n in cluster.nodes]
        if leader_only:
            leader, _ = cluster.leader(timeout=30)
            endpoints = [n.endpoint for n in cluster.nodes if n.name == leader]
        for subject, kind in zip(SUBJECTS, (EtcdGrpcProxyProcess, GrpcProxyProcess), strict=True):
            proxies[subject] = kind(endpoints)
            proxies[subject].start()
        yield cluster, proxies
    finally:
        for proxy in proxies.values():
            proxy.close()
        cluster.close()


def run_through(
    args: argparse.Namespace,
    cluster: FreshCluster,
    proxy: GrpcProxyProcess,
    workload: Workload,
    subject: str,
    round_no: int,
) -> Run | Failure:
    """One ebench run through ``proxy``, with the leader and any raft term change during it; a Failure
    when ebench gave no result."""
    leader, term_before = cluster.leader()
    pids = [proxy.pid] if proxy.pid is not None else []  # CPU: only the proxy's is of interest
    try:
        run = measure(args.ebench, workload, subject, round_no, proxy.endpoint, args.scale, pids)
    except (RuntimeError, ValueError, KeyError, subprocess.TimeoutExpired) as exc:
        return Failure(workload.name, subject, round_no, " ".join(str(exc).split())[-300:])
    _, term_after = cluster.leader()
    return replace(run, leader=leader, term_changes=max(0, term_after - term_before))


def run_line(result: Run | Failure) -> str:
    """The line printed as each run ends."""
    head = f"{result.workload:12} {result.subject:12} round {result.round}:"
    if isinstance(result, Failure):
        return f"{head} FAILED {result.message}"
    return (
        f"{head} {result.ops_per_s:9,.0f} ops/s p50 {result.p50_ms:6.2f} ms p99 {result.p99_ms:6.2f} ms "
        f"errors {result.errors} proxy CPU {result.server_cpu_us_per_op:.0f} µs/op "
        f"leader {result.leader} term changes {result.term_changes}"
    )


def run_all(args: argparse.Namespace, workloads: list[Workload]) -> tuple[list[Run], list[Failure]]:
    """Every workload and round through both proxies, the order alternating from round to round."""
    runs: list[Run] = []
    failures: list[Failure] = []
    with setup(args.ebench, args.cluster_kind, args.leader_only) as (cluster, proxies):
        for workload in workloads:
            for round_no in range(1, args.rounds + 1):
                for subject in SUBJECTS if round_no % 2 else tuple(reversed(SUBJECTS)):
                    result = run_through(args, cluster, proxies[subject], workload, subject, round_no)
                    if isinstance(result, Failure):
                        failures.append(result)
                    else:
                        runs.append(result)
                    print(run_line(result), flush=True)
    return runs, failures


def report_section(
    runs: list[Run],
    failures: list[Failure],
    args: argparse.Namespace,
    workloads: list[Workload],
    load: tuple[float, float],
) -> str:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    commands = list(dict.fromkeys(r.command for r in runs))
    measures = [f"- {w.name}: {w.measures}." for w in workloads if w.measures]
    return "\n".join(
        [
            f"## {now}: gRPC proxy, quorum grpc-proxy vs etcd grpc-proxy (3-member {args.cluster_kind})",
            "",
            f"Machine: {environment()}; 1-minute load average {load[0]:.1f} before, {load[1]:.1f} after "
            "(above the CPU count means other work shared the machine).",
            f"One 3-member {args.cluster_kind} cluster (default flags, `foo` preloaded with 256 B) and both "
            "proxies (default flags, --endpoints = "
            + ("the leader only" if args.leader_only else "the three members")
            + ") for the whole run; "
            f"{args.rounds} rounds per proxy, order alternating; ratios and floors use medians. ebench's "
            "only endpoint is the proxy, so the watch workload's puts go through it too. The CPU column is "
            "the proxy process's own CPU per operation; the leader is the cluster's.",
            "",
            "Command: `python bench/grpcproxy.py " + " ".join(args.argv) + "`; ebench command lines "
            "(`{endpoints}` is a proxy's listen address):",
            "",
            *[f"    {c}" for c in commands],
            "",
            *([*measures, ""] if measures else []),
            render_summary(runs),
            "",
            *[
                f"Failed, left out of the medians: {f.workload} {f.subject} round {f.round}: {f.message}"
                for f in failures
            ],
            *([""] if failures else []),
            "<details><summary>every run</summary>",
            "",
            render_runs(runs).replace("server CPU µs/op", "proxy CPU µs/op"),
            "",
            "</details>",
            "",
        ]
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ebench", default=os.environ.get("EBENCH"), help="ebench binary (or $EBENCH)")
    parser.add_argument("--cluster-kind", default="quorum", choices=("quorum", "etcd"))
    parser.add_argument(
        "--workloads", default=",".join(DEFAULT_WORKLOADS), help="any of compare.py's workloads"
    )
    parser.add_argument("--rounds", type=int, default=2, help="runs per proxy and workload")
    parser.add_argument(
        "--leader-only", action="store_true", help="give both proxies only the leader's endpoint"
    )
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every --total by this")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "docs" / "performance.md")
    parser.add_argument("--no-write", action="store_true", help="print only, do not append to --output")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.ebench or not os.access(args.ebench, os.X_OK):
        print("error: give the ebench binary with --ebench PATH or EBENCH=PATH", file=sys.stderr)
        return 2
    workloads = [WORKLOADS[w.strip()] for w in args.workloads.split(",") if w.strip()]
    load_before = os.getloadavg()[0]
    runs, failures = run_all(args, workloads)
    load_after = os.getloadavg()[0]
    print()
    print(render_summary(runs))
    if not args.no_write:
        section = report_section(runs, failures, args, workloads, (load_before, load_after))
        append_report(args.output, section)
        print(f"\nappended to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
