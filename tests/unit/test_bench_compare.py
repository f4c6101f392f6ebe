"""The pure parts of bench/compare.py: ebench command lines, and medians, ratios and floors from runs.

Nothing here starts a process: runs are made up, the way ebench's JSON line would fill them.
"""

from __future__ import annotations

import math

import pytest

from bench.compare import (
    FLOORS,
    WORKLOADS,
    Floor,
    Run,
    Settings,
    render_summary,
    run_from_result,
    subject_labels,
    summarize,
)

EB = "/x/ebench"


def run(workload: str, subject: str, round_no: int, ops_per_s: float, p50_ms: float = 1.0) -> Run:
    return Run(workload, subject, round_no, ops_per_s, p50_ms, p50_ms * 3, 0, 1000, 0.5, "ebench ...")


def test_the_count_is_scaled_and_never_below_the_workload_minimum() -> None:
    put = WORKLOADS["put-64c"]
    assert put.command(EB, "e", 0.1)[-2:] == ["--total", "5000"]
    assert put.command(EB, "e", 0.0001)[-2:] == ["--total", "100"]


def test_watch_scales_its_puts_since_ebench_derives_the_total_from_them() -> None:
    cmd = WORKLOADS["watch-1000w"].command(EB, "e", 0.1)
    assert cmd[-2:] == ["--puts", "10"]
    assert "--total" not in cmd
    assert WORKLOADS["watch-1000w"].command(EB, "e", 0.01)[-2:] == ["--puts", "10"]


def test_single_writer_workloads_target_the_leader_only_in_a_multi_member_cluster() -> None:
    three, one = Settings(EB, members=3), Settings(EB, members=1)
    assert "--target-leader" in three.command(WORKLOADS["put-1c"], "a,b,c")
    assert "--target-leader" in three.command(WORKLOADS["watch-1000w"], "a,b,c")
    assert "--target-leader" not in three.command(WORKLOADS["put-64c"], "a,b,c")
    assert "--target-leader" not in one.command(WORKLOADS["put-1c"], "a")
    assert "--target-leader" in Settings(EB, members=3, target_leader=True).command(
        WORKLOADS["put-64c"], "a,b,c"
    )


def test_the_shown_command_names_ebench_and_hides_the_endpoints() -> None:
    shown = Settings(EB, members=3, scale=0.1).shown(WORKLOADS["put-1c"])
    assert shown == (
        "ebench put --conns 1 --clients 1 --val-size 256 --sequential-keys --key-space-size 100000 "
        "--endpoints {endpoints} --target-leader --total 500"
    )


def test_single_node_command_lines_are_those_recorded_before_clusters() -> None:
    shown = Settings(EB).shown(WORKLOADS["range-l-64c"])
    assert (
        shown
        == "ebench range foo --consistency l --conns 8 --clients 64 --endpoints {endpoints} --total 100000"
    )


def test_the_same_kind_twice_gets_numbered_labels() -> None:
    assert subject_labels("etcd,etcd") == ["etcd#1", "etcd#2"]
    assert subject_labels("etcd, quorum") == ["etcd", "quorum"]


def test_a_run_is_read_from_ebench_json() -> None:
    result = {
        "bench": "watch",
        "ops": 100000,
        "ops_per_s": 14500.5,
        "p50_ms": 210.1,
        "p99_ms": 480.0,
        "errors": 3,
        "missing_events": 3,
    }
    r = run_from_result(
        result, "watch-1000w", "quorum", 2, "ebench watch", server_cpu_s=2.0, leader="m2", term_changes=1
    )
    assert (r.ops_per_s, r.p50_ms, r.p99_ms, r.errors, r.ops) == (14500.5, 210.1, 480.0, 3, 100000)
    assert (r.leader, r.term_changes) == ("m2", 1)
    assert r.server_cpu_us_per_op == pytest.approx(20.0)


@pytest.mark.parametrize(("quorum_second_run", "meets"), [(600.0, True), (540.0, False)])
def test_a_throughput_floor_is_judged_on_the_ratio_of_medians(quorum_second_run: float, meets: bool) -> None:
    runs = [
        run("put-64c", "etcd", 1, 1000),
        run("put-64c", "quorum", 1, 500),
        run("put-64c", "quorum", 2, quorum_second_run),
        run("put-64c", "etcd", 2, 1200),
    ]
    [summary] = summarize(runs, ["etcd", "quorum"], FLOORS[3])
    assert summary.ops == (1100, (500 + quorum_second_run) / 2)
    assert summary.meets_floor is meets


@pytest.mark.parametrize(("quorum_p50", "meets"), [(1.9, True), (2.0, True), (2.5, False)])
def test_a_latency_floor_bounds_the_p50_ratio_from_above(quorum_p50: float, meets: bool) -> None:
    runs = [run("put-1c", "etcd", 1, 900, p50_ms=1.0), run("put-1c", "quorum", 1, 300, p50_ms=quorum_p50)]
    [summary] = summarize(runs, ["etcd", "quorum"], FLOORS[3])
    assert summary.floor == Floor("p50_ms", 2.0, "issue 3")
    assert summary.meets_floor is meets


def test_a_workload_without_runs_of_one_subject_has_no_verdict() -> None:
    [summary] = summarize([run("range-l-64c", "etcd", 1, 900)], ["etcd", "quorum"], FLOORS[3])
    assert math.isnan(summary.ratio_of("ops_per_s"))
    assert summary.meets_floor is None
    assert render_summary([summary], ["etcd", "quorum"]).splitlines()[-1].endswith("| n/a |")


def test_the_summary_table_states_each_floor_and_whether_it_is_met() -> None:
    runs = [
        run("put-64c", "etcd#1", 1, 1000),
        run("put-64c", "etcd#2", 1, 900),
        run("range-s-64c", "etcd#1", 1, 1000),
        run("range-s-64c", "etcd#2", 1, 400),
    ]
    table = render_summary(summarize(runs, ["etcd#1", "etcd#2"], FLOORS[3]), ["etcd#1", "etcd#2"])
    header, _, put, range_s = table.splitlines()
    assert header.endswith("| floor | meets floor |")
    assert put.startswith("| put-64c | 1,000 | 900 | 0.90 |")
    assert put.endswith("| ops/s >= 0.5x (issue 3) | yes |")
    assert range_s.endswith("| - | - |")  # issue 3 sets no floor for serializable reads


def test_every_issue_floor_names_a_workload_the_harness_runs() -> None:
    assert set(FLOORS[3]) == {"put-64c", "put-1c", "range-l-64c", "watch-1000w", "lease-keepalive-1000"}
    assert all(name in WORKLOADS for floors in FLOORS.values() for name in floors)
