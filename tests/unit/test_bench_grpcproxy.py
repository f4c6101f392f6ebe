"""The pure parts of bench/grpcproxy.py: issue 9's floors judged on medians, the summary and run lines.

Nothing here starts a process: runs are made up, the way ebench's JSON line would fill them.
"""

from __future__ import annotations

from bench.compare import Failure, Run, summarize
from bench.grpcproxy import FLOORS, SUBJECTS, render_summary, run_line, verdict


def run(workload: str, subject: str, round_no: int, ops_per_s: float, p50_ms: float = 1.0) -> Run:
    return Run(workload, subject, round_no, ops_per_s, p50_ms, p50_ms * 3, 0, 1000, 0.5, "ebench ...")


def judged(
    workload: str, etcd_ops: float, quorum_ops: float, etcd_p50: float = 1.0, quorum_p50: float = 1.0
) -> str:
    """The verdict on one run of each proxy."""
    runs = [
        run(workload, "etcd-proxy", 1, etcd_ops, etcd_p50),
        run(workload, "quorum-proxy", 1, quorum_ops, quorum_p50),
    ]
    [summary] = summarize(runs, list(SUBJECTS), {})
    return verdict(summary, FLOORS.get(workload, ()))


def test_puts_through_quorums_proxy_need_half_of_etcds_proxy() -> None:
    assert judged("put-64c", 1000, 500) == "yes"
    assert judged("put-64c", 1000, 499) == "no"


def test_cached_ranges_need_at_least_etcds_proxy() -> None:
    assert judged("range-s-64c", 9000, 9000) == "yes"
    assert judged("range-s-64c", 9000, 8900) == "no"


def test_watch_needs_half_the_events_and_no_higher_p50() -> None:
    assert judged("watch-1000w", 100_000, 50_000, 10.0, 10.0) == "yes"
    assert judged("watch-1000w", 100_000, 200_000, 10.0, 10.5) == "no"
    assert judged("watch-1000w", 100_000, 40_000, 10.0, 5.0) == "no"


def test_a_proxy_without_runs_is_not_judged() -> None:
    [summary] = summarize([run("put-64c", "etcd-proxy", 1, 1000)], list(SUBJECTS), {})
    assert verdict(summary, FLOORS["put-64c"]) == "n/a"


def test_a_workload_without_a_floor_says_so() -> None:
    assert judged("put-1c", 900, 800) == "-"


def test_the_summary_shows_medians_ratios_and_every_floor_of_a_workload() -> None:
    runs = [
        run("watch-1000w", "etcd-proxy", 1, 100_000, 10.0),
        run("watch-1000w", "quorum-proxy", 1, 60_000, 8.0),
        run("watch-1000w", "quorum-proxy", 2, 80_000, 12.0),
        run("watch-1000w", "etcd-proxy", 2, 100_000, 10.0),
    ]
    row = render_summary(runs).splitlines()[-1]
    assert row.startswith("| watch-1000w | 100,000 | 70,000 | 0.70 | 10.00 / 10.00 | 1.00 |")
    assert "ops/s >= 0.5x (issue 9); p50 <= 1x (issue 9) | yes |" in row


def test_a_run_line_names_the_proxy_and_a_failure_its_message() -> None:
    assert run_line(run("put-64c", "quorum-proxy", 2, 1234.0)).startswith(
        "put-64c      quorum-proxy round 2:     1,234 ops/s p50   1.00 ms"
    )
    assert run_line(Failure("put-64c", "etcd-proxy", 1, "ebench failed")).endswith(
        "round 1: FAILED ebench failed"
    )
