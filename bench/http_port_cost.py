"""What serving HTTP/1.1 on the client port costs gRPC: put throughput with the shared port (the
default) against the same member with a gRPC-only port, and the per-call cost of the metrics counters.

Usage:
    EBENCH=/root/.cache/quorum-bench/ebench python bench/http_port_cost.py --rounds 3 --scale 0.4
    git archive 9ee7dbb | tar -x -C /tmp/base && python bench/http_port_cost.py --baseline-tree /tmp/base
    python bench/http_port_cost.py --micro-only

The gRPC-only subject is the same `quorum` with `Server.http1_handoff` left unset (a connection that
does not start with the HTTP/2 preface is closed), so the two differ only in the sniffing. The engine
checks the preface once per connection, so no per-call difference is expected; the counters
(grpc_server_handled_total) are on in both, and `--micro` times them alone. Prints; writes nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import timeit
from collections.abc import Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench import compare  # noqa: E402
from cluster.rpc.stats import CallStats  # noqa: E402
from cluster.testing import procs  # noqa: E402

GRPC_ONLY = "quorum-grpc-only"
_GRPC_ONLY_MAIN = """
import sys
from cluster.services import http_endpoints
_init = http_endpoints.HttpService.__init__
def _grpc_only(self, node, server):
    _init(self, node, server)
    server.http1_handoff = None
http_endpoints.HttpService.__init__ = _grpc_only
from cluster.server.main import main
main(sys.argv[1:])
"""


BASELINE = "quorum-baseline"
_baseline_tree: list[str] = []


class BaselineQuorum(procs.QuorumProcess):
    """`quorum` from another source tree (e.g. `git archive` of the commit before the HTTP side), to
    measure what the per-call counters cost against a build without them."""

    def process_env(self) -> dict[str, str]:
        env = super().process_env()
        env["PYTHONPATH"] = os.pathsep.join([*_baseline_tree, env["PYTHONPATH"]])
        return env


class GrpcOnlyQuorum(procs.QuorumProcess):
    """`quorum` whose client port refuses anything but HTTP/2."""

    def command(self, flags: Sequence[str]) -> list[str]:
        return [sys.executable, "-c", _GRPC_ONLY_MAIN, *flags]


def micro() -> None:
    stats = CallStats()
    path = "/etcdserverpb.KV/Put"
    n = 1_000_000
    count = timeit.timeit(lambda: stats.count(path, 0), number=n) / n
    base = timeit.timeit(lambda: None, number=n) / n
    stats.track_latency = True
    observe = timeit.timeit(lambda: stats.observe(path, 0.0002), number=n) / n
    print(f"CallStats.count per call: {(count - base) * 1e9:.0f} ns (minus {base * 1e9:.0f} ns of lambda)")
    print(f"CallStats.observe per call (--metrics=extensive only): {(observe - base) * 1e9:.0f} ns")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ebench", default=os.environ.get("EBENCH", "/root/.cache/quorum-bench/ebench"))
    parser.add_argument("--workloads", default="put-64c,put-1c")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scale", type=float, default=0.4)
    parser.add_argument("--members", type=int, default=1)
    parser.add_argument("--micro-only", action="store_true")
    parser.add_argument("--baseline-tree", help="also run `quorum` from this source tree (a third subject)")
    args = parser.parse_args(argv)
    micro()
    if args.micro_only:
        return 0
    procs.NODE_KINDS[GRPC_ONLY] = GrpcOnlyQuorum
    subjects = [GRPC_ONLY, "quorum"]
    if args.baseline_tree:
        _baseline_tree.append(args.baseline_tree)
        procs.NODE_KINDS[BASELINE] = BaselineQuorum
        subjects.insert(0, BASELINE)
    return compare.main(
        [
            "--ebench", args.ebench,
            "--subjects", ",".join(subjects),
            "--workloads", args.workloads,
            "--rounds", str(args.rounds),
            "--scale", str(args.scale),
            "--members", str(args.members),
            "--no-write",
        ]
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
