"""``python -m cluster.testing.chaos.recheck HISTORY.json [--prefix /chaos/]``: check a saved history again
(after editing it, or with a changed checker). Exit code 0 if both checkers accept it, 1 if not."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cluster.testing.chaos.archive import load
from cluster.testing.chaos.linearizability import check_history
from cluster.testing.chaos.serializable import check_serializable
from cluster.testing.chaos.watchcheck import check_watches
from cluster.testing.chaos.workload import WorkloadConfig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster.testing.chaos.recheck", description=__doc__)
    parser.add_argument("history", type=Path)
    parser.add_argument("--prefix", default="/chaos/", help="the workload's key prefix")
    parser.add_argument("--search-budget", type=float, default=300.0)
    args = parser.parse_args(argv)
    history = load(args.history.read_text())
    keyspace = WorkloadConfig(prefix=args.prefix.encode()).keyspace
    lin = check_history(
        history.operations, history.watches, budget_seconds=args.search_budget, pauses=history.pauses
    )
    watch = check_watches(history.operations, history.watches, keyspace, compactions=history.compactions)
    print(f"linearizability: {lin.ok} ({lin.operations} ops, {lin.steps} steps)\n{lin.report}")
    print(f"watch: {watch.ok} ({watch.streams} streams, {watch.events} events)\n{watch.report}")
    stale = check_serializable(history.operations)
    print("serializable reads:", "\n  ".join(["VIOLATION", *stale]) if stale else "ok")
    return 0 if lin.ok and watch.ok and not stale else 1


if __name__ == "__main__":
    sys.exit(main())
