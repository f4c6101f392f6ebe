"""``python -m cluster.testing.chaos --seed N --duration S --faults kill,pause,... [--target quorum|etcd]``

Exit code: 0 no violation, 1 a violation, 2 inconclusive (the linearizability search ran out of budget).
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from cluster.testing.chaos.faults import FAULT_KINDS
from cluster.testing.chaos.front import FRONTS
from cluster.testing.chaos.runner import RunConfig, run
from cluster.testing.chaos.workload import WorkloadConfig


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster.testing.chaos", description=__doc__)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--duration", type=float, default=15.0, help="seconds of workload under faults")
    parser.add_argument(
        "--faults",
        default="kill,pause,partition,compact,defrag",
        help=f"comma-separated, of {','.join(FAULT_KINDS)}",
    )
    parser.add_argument("--target", choices=("quorum", "etcd"), default="quorum")
    parser.add_argument(
        "--front",
        choices=FRONTS,
        help="half the clients and two watches go through this proxy (the faults hit the members)",
    )
    parser.add_argument(
        "--report-dir", type=Path, help="keep reports here (default: a temp dir kept on failure)"
    )
    parser.add_argument(
        "--search-budget", type=float, default=60.0, help="seconds for the linearizability search"
    )
    parser.add_argument("--clients", type=int, default=WorkloadConfig().clients, help="concurrent KV clients")
    parser.add_argument("--keys", type=int, default=WorkloadConfig().keys, help="keys the workload writes")
    args = parser.parse_args(argv)
    faults = tuple(f for f in args.faults.split(",") if f)
    config = RunConfig(
        args.seed,
        args.duration,
        faults,
        args.target,
        args.report_dir,
        WorkloadConfig(keys=args.keys, clients=args.clients),
        args.search_budget,
        args.front or "",
    )
    signal.signal(signal.SIGTERM, _interrupt)  # so that `run` closes the cluster on the way out
    verdict = run(config)
    print(verdict.text(), flush=True)
    return {True: 0, False: 1, None: 2}[verdict.ok]


if __name__ == "__main__":
    sys.exit(main())
