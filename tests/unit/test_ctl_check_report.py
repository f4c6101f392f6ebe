"""check perf / check datascale: etcdctl's statistics, PASS/FAIL rules and lines."""

from __future__ import annotations

import io
import math
import random

import pytest

from cluster.ctl.check_report import (
    PERF_LOADS,
    LatencyReport,
    Stats,
    datascale_verdict,
    go_put_varint,
    perf_verdict,
    random_key,
    resident_memory,
)
from cluster.ctl.progress_bar import ProgressBar


def test_a_healthy_run_passes_every_rule() -> None:
    lines, ok = perf_verdict(Stats(rps=149.2, slowest=0.118578, stddev=0.009539), limit=150)
    assert ok
    assert lines == [
        "PASS: Throughput is 150 writes/s",
        "PASS: Slowest request took 0.118578s",
        "PASS: Stddev is 0.009539s",
        "PASS",
    ]


@pytest.mark.parametrize(("rps", "passes"), [(135.0, False), (135.01, True), (100.0, False)])
def test_throughput_must_exceed_ninety_percent_of_the_limit(rps: float, passes: bool) -> None:
    lines, ok = perf_verdict(Stats(rps=rps, slowest=0.01, stddev=0.01), limit=150)
    assert ok is passes
    expected = "PASS: Throughput is" if passes else "FAIL: Throughput too low:"
    assert lines[0] == f"{expected} {int(rps) + 1} writes/s"
    assert lines[-1] == ("PASS" if passes else "FAIL")


def test_a_request_slower_than_half_a_second_fails_without_a_fail_prefix() -> None:
    assert perf_verdict(Stats(150, 0.5, 0.01), 150)[1]
    lines, ok = perf_verdict(Stats(150, 0.500001, 0.01), 150)
    assert not ok
    assert lines[1] == "Slowest request took too long: 0.500001s"
    assert lines[-1] == "FAIL"


def test_a_stddev_above_a_hundred_milliseconds_fails() -> None:
    assert perf_verdict(Stats(150, 0.3, 0.1), 150)[1]
    lines, ok = perf_verdict(Stats(150, 0.3, 0.2), 150)
    assert not ok
    assert lines[2] == "Stddev too high: 0.200000s"


def test_errors_fail_the_check_and_are_listed_first() -> None:
    lines, ok = perf_verdict(Stats(150, 0.1, 0.01, {"etcdserver: request timed out": 3}), 150)
    assert not ok
    assert lines[:2] == ["FAIL: too many errors", "FAIL: ERROR(etcdserver: request timed out) -> 3"]
    assert lines[2].startswith("PASS: Throughput")
    assert lines[-1] == "FAIL"


def test_no_successful_request_fails_on_throughput_and_prints_go_nan() -> None:
    report = LatencyReport()
    report.start(0.0)
    report.record(1.0, "boom")
    stats = report.finish(60.0)
    lines, ok = perf_verdict(stats, 150)
    assert not ok
    assert "FAIL: Throughput too low: 1 writes/s" in lines
    assert "PASS: Stddev is NaNs" in lines


def test_the_report_computes_rps_slowest_and_population_stddev() -> None:
    report = LatencyReport()
    report.start(10.0)
    for latency in (0.1, 0.2, 0.3, 0.4):
        report.record(latency)
    stats = report.finish(12.0)
    assert stats.rps == 2.0
    assert stats.slowest == 0.4
    assert math.isclose(stats.stddev, math.sqrt(0.0125))


def test_the_loads_are_etcdctls() -> None:
    assert [(lo.limit, lo.clients, lo.duration) for lo in PERF_LOADS.values()] == [
        (150, 50, 60), (1000, 200, 60), (8000, 500, 60), (15000, 1000, 60),
    ]


def test_datascale_reports_the_memory_growth_in_megabytes() -> None:
    lines, ok = datascale_verdict(Stats(1, 0, 0), 100 * 1024 * 1024, 112.5 * 1024 * 1024)
    assert ok
    assert lines == ["PASS: Approximate system memory used : 12.50 MB."]
    lines, ok = datascale_verdict(Stats(1, 0, 0, {"x": 1}), 0, 1)
    assert not ok
    assert lines == ["FAIL: too many errors", "FAIL: ERROR(x) -> 1"]


def test_resident_memory_is_read_from_the_first_matching_metrics_line() -> None:
    page = (
        "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
        "# TYPE process_resident_memory_bytes gauge\n"
        "process_resident_memory_bytes 5.4525952e+07\n"
    )
    assert resident_memory(page) == 54525952.0
    assert resident_memory("go_goroutines 3\n") is None


def test_keys_are_the_prefix_and_a_zigzag_varint_padded_to_size() -> None:
    assert go_put_varint(1, 4) == b"\x02\x00\x00\x00"
    assert go_put_varint(-1, 2) == b"\x01\x00"
    assert go_put_varint(300, 3) == b"\xd8\x04\x00"
    key = random_key(b"/p/", 256, random.Random(1))
    assert key.startswith(b"/p/") and len(key) == 3 + 256


def test_the_progress_bar_without_a_terminal_is_counters_percent_and_time() -> None:
    bar = ProgressBar(60, io.BytesIO())
    bar.width = 0
    assert bar.line(final=False, now=bar._started) == " 0 / 60    0.00%"
    bar.current = 60
    assert bar.line(final=True, now=bar._started + 60.2) == " 60 / 60  100.00% 1m0s"


def test_the_progress_bar_on_a_terminal_fills_its_width() -> None:
    bar = ProgressBar(10, io.BytesIO())
    bar.width = 40
    bar.current = 5
    line = bar.line(final=False, now=bar._changed)
    assert len(line) == 40
    assert line.startswith(" 5 / 10 Booo") and "m " in line and line.endswith("!  50.00%")
