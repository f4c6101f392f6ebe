"""What an L4 gateway costs: the same ebench puts direct to a 3-member cluster, through Quorum's gateway
and through real etcd's gateway (`etcd gateway start`), both gateways in front of the same cluster.

Usage:
    python bench/gateway.py --ebench PATH                  # or EBENCH=PATH python bench/gateway.py
    python bench/gateway.py --cluster-kind etcd --rounds 3 --scale 0.2 --no-write

One cluster (Quorum by default, or real etcd) and both gateways run for the whole invocation; for every
workload and round the three subjects run the identical ebench command, in an order that alternates
from round to round. "direct" gives ebench all three member endpoints; each gateway gets the same three
(round-robin per connection). Reported per workload: median ops/s and p50/p99 of each subject, the
ratios gateway/direct and quorum-gateway/etcd-gateway, the p50 each gateway adds, and the gateway
process's CPU per operation. Unless --no-write, a dated section is appended to docs/performance.md.
This is a measurement tool, not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
# Run as a script, this file's folder comes first on sys.path and its name would shadow the `gateway`
# package; import from the repository root instead.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(REPO_ROOT))

from bench.compare import (  # noqa: E402
    WORKLOADS,
    Run,
    _fmt_ratio,
    _median,
    append_report,
    environment,
    measure,
    process_cpu_seconds,
    ratio,
    render_runs,
)
from cluster.testing.ports import free_port, port_is_open  # noqa: E402
from cluster.testing.procs import NodeProcess, cluster_of, etcd_binary  # noqa: E402
from gateway.testing import GatewayProcess  # noqa: E402

SUBJECTS = ("direct", "quorum-gateway", "etcd-gateway")


class EtcdGateway:
    """`etcd gateway start` as a child process on a free loopback port."""

    def __init__(self, endpoints: list[str]) -> None:
        self.port = free_port()
        self.endpoint = f"127.0.0.1:{self.port}"
        exe = etcd_binary()
        if exe is None:
            raise FileNotFoundError("etcd not found")
        self.proc = subprocess.Popen(
            [exe, "gateway", "start", f"--endpoints={','.join(endpoints)}", f"--listen-addr={self.endpoint}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 20
        while not port_is_open("127.0.0.1", self.port):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.close()
                raise RuntimeError("etcd gateway did not start")
            time.sleep(0.05)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


@contextmanager
def setup(cluster_kind: str) -> Iterator[tuple[list[NodeProcess], GatewayProcess, EtcdGateway]]:
    nodes = cluster_of(cluster_kind, 3)
    quorum_gw: GatewayProcess | None = None
    etcd_gw: EtcdGateway | None = None
    try:
        for node in nodes:
            node.start(wait=False)
        for node in nodes:
            node.wait_ready(60)
        endpoints = [n.endpoint for n in nodes]
        quorum_gw = GatewayProcess(endpoints)
        quorum_gw.start()
        etcd_gw = EtcdGateway(endpoints)
        # EtcdGateway's readiness check made one connection, which advanced its round-robin; one to
        # ours too, so both send the n-th client connection to the same member (at 1 client, a leader
        # versus a follower is worth more than either gateway costs).
        port_is_open("127.0.0.1", quorum_gw.client_port)
        yield nodes, quorum_gw, etcd_gw
    finally:
        if etcd_gw is not None:
            etcd_gw.close()
        if quorum_gw is not None:
            quorum_gw.close()
        for node in nodes:
            node.close()


class EchoServer(threading.Thread):
    """A loopback TCP echo server (a thread per connection): the member for the round-trip probe."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"127.0.0.1:{self.listener.getsockname()[1]}"

    def run(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.listener.accept()
                threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while data := conn.recv(65536):
                conn.sendall(data)


def round_trips(endpoint: str, count: int, cpu_pid: int | None) -> tuple[float, float]:
    """p50 of ``count`` 300-byte ping-pongs through ``endpoint`` (µs), and ``cpu_pid``'s CPU per one."""
    host, port = endpoint.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        message = b"x" * 300
        cpu_before = process_cpu_seconds(cpu_pid) if cpu_pid else 0.0
        times = []
        for _ in range(count):
            began = time.perf_counter()
            sock.sendall(message)
            received = 0
            while received < len(message):
                received += len(sock.recv(65536))
            times.append(time.perf_counter() - began)
        cpu = (process_cpu_seconds(cpu_pid) - cpu_before) if cpu_pid else 0.0
    return statistics.median(times) * 1e6, cpu / count * 1e6


def echo_rtt_table(rounds: int, count: int) -> str:
    """Round trips to an echo server direct and through each gateway: the gateways' own latency and
    CPU per forwarded request/response, without a cluster's noise."""
    echo = EchoServer()
    echo.start()
    quorum_gw = GatewayProcess([echo.endpoint])
    etcd_gw: EtcdGateway | None = None
    results: dict[str, list[tuple[float, float]]] = {s: [] for s in SUBJECTS}
    try:
        quorum_gw.start()
        etcd_gw = EtcdGateway([echo.endpoint])
        targets = {
            "direct": (echo.endpoint, None),
            "quorum-gateway": (quorum_gw.endpoint, quorum_gw.pid),
            "etcd-gateway": (etcd_gw.endpoint, etcd_gw.proc.pid),
        }
        for round_no in range(rounds):
            for subject in SUBJECTS if round_no % 2 == 0 else tuple(reversed(SUBJECTS)):
                endpoint, pid = targets[subject]
                results[subject].append(round_trips(endpoint, count, pid))
    finally:
        if etcd_gw is not None:
            etcd_gw.close()
        quorum_gw.close()
        echo.listener.close()
    p50 = {s: statistics.median(r[0] for r in results[s]) for s in SUBJECTS}
    cpu = {s: statistics.median(r[1] for r in results[s]) for s in SUBJECTS}
    return "\n".join(
        [
            "",
            f"Echo round trips ({count} x 300 B ping-pong on one connection, {rounds} rounds, medians):",
            "",
            "| path | p50 µs | added p50 µs | gateway CPU µs per round trip |",
            "|---|---|---|---|",
            *[f"| {s} | {p50[s]:.0f} | {p50[s] - p50['direct']:+.0f} | {cpu[s]:.0f} |" for s in SUBJECTS],
            "",
        ]
    )


def render_summary(runs: list[Run]) -> str:
    lines = [
        "| workload | direct ops/s | quorum gw ops/s | etcd gw ops/s | quorum gw / direct | etcd gw / direct "
        "| quorum gw / etcd gw | p50 ms direct / quorum gw / etcd gw | p50 added ms quorum gw / etcd gw "
        "| p99 ms direct / quorum gw / etcd gw | gateway CPU µs/op quorum / etcd |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in dict.fromkeys(r.workload for r in runs):
        ops = [_median(runs, name, s, "ops_per_s") for s in SUBJECTS]
        p50 = [_median(runs, name, s, "p50_ms") for s in SUBJECTS]
        p99 = [_median(runs, name, s, "p99_ms") for s in SUBJECTS]
        cpu = [_median(runs, name, s, "server_cpu_us_per_op") for s in SUBJECTS[1:]]
        lines.append(
            f"| {name} | {ops[0]:,.0f} | {ops[1]:,.0f} | {ops[2]:,.0f} | {_fmt_ratio(ratio(ops[1], ops[0]))} "
            f"| {_fmt_ratio(ratio(ops[2], ops[0]))} | {_fmt_ratio(ratio(ops[1], ops[2]))} "
            f"| {p50[0]:.2f} / {p50[1]:.2f} / {p50[2]:.2f} | {p50[1] - p50[0]:+.2f} / {p50[2] - p50[0]:+.2f} "
            f"| {p99[0]:.2f} / {p99[1]:.2f} / {p99[2]:.2f} | {cpu[0]:.0f} / {cpu[1]:.0f} |"
        )
    return "\n".join(lines)


def report_section(runs: list[Run], args: argparse.Namespace, load: tuple[float, float]) -> str:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    commands = list(dict.fromkeys(r.command for r in runs))
    return "\n".join(
        [
            f"## {now}: L4 gateway cost, direct vs quorum gateway vs etcd gateway ({args.cluster_kind})",
            "",
            f"Machine: {environment()}; 1-minute load average {load[0]:.1f} before, {load[1]:.1f} after "
            "(above the CPU count means other work shared the machine).",
            f"One 3-member {args.cluster_kind} cluster (default flags) and both gateways for the whole run; "
            f"{args.rounds} rounds per subject, order alternating; ratios use medians. 'direct' gives ebench "
            "all three member endpoints, each gateway the same three. The CPU column is the gateway "
            "process's own CPU per operation.",
            "",
            "Command: `python bench/gateway.py " + " ".join(args.argv) + "`; ebench command lines "
            "(`{endpoint}` is the three members, or a gateway's listen address):",
            "",
            *[f"    {c}" for c in commands],
            "",
            render_summary(runs),
            "",
            "<details><summary>every run</summary>",
            "",
            render_runs(runs).replace("server CPU µs/op", "gateway CPU µs/op"),
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
    parser.add_argument("--workloads", default="put-1c,put-64c", help="any of compare.py's workloads")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scale", type=float, default=0.4, help="multiply every --total by this")
    parser.add_argument(
        "--echo-round-trips",
        type=int,
        default=5000,
        help="also time this many 300-byte round trips to an echo server (0: skip)",
    )
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
    runs: list[Run] = []
    with setup(args.cluster_kind) as (nodes, quorum_gw, etcd_gw):
        targets = {
            "direct": (",".join(n.endpoint for n in nodes), []),
            "quorum-gateway": (quorum_gw.endpoint, [quorum_gw.pid] if quorum_gw.pid else []),
            "etcd-gateway": (etcd_gw.endpoint, [etcd_gw.proc.pid]),
        }
        for workload in workloads:
            for round_no in range(1, args.rounds + 1):
                order = SUBJECTS if round_no % 2 else tuple(reversed(SUBJECTS))
                for subject in order:
                    endpoint, pids = targets[subject]  # CPU: only the gateway's is of interest
                    run = measure(args.ebench, workload, subject, round_no, endpoint, args.scale, pids)
                    runs.append(run)
                    print(
                        f"{workload.name:8} {subject:15} round {round_no}: {run.ops_per_s:9,.0f} ops/s "
                        f"p50 {run.p50_ms:6.2f} ms p99 {run.p99_ms:6.2f} ms errors {run.errors} "
                        f"gateway CPU {run.server_cpu_us_per_op:.0f} µs/op",
                        flush=True,
                    )
    echo = echo_rtt_table(args.rounds, args.echo_round_trips) if args.echo_round_trips else ""
    load_after = os.getloadavg()[0]
    print()
    print(render_summary(runs))
    print(echo)
    if not args.no_write:
        append_report(args.output, report_section(runs, args, (load_before, load_after)) + echo)
        print(f"\nappended to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
