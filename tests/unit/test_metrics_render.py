"""The metrics primitives: the lock-free histogram, go-grpc-prometheus's families from the engine's
counters, and the text exposition (etcd's exact names, Go's number formatting)."""

from __future__ import annotations

import grpc
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families

from cluster.rpc.stats import CallStats, Histogram, exponential_buckets
from cluster.services.metrics import (
    GO_CODE_NAMES,
    METHOD_LABELS,
    GrpcCollector,
    exact_counter,
    go_float,
    render,
)


class _Fixed:
    def __init__(self, *families: object) -> None:
        self.families = families

    def collect(self) -> object:
        return iter(self.families)


def rendered(*families: object) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(*families))  # type: ignore[arg-type]
    return render(registry).decode()


def test_histogram_buckets_are_cumulative_and_inclusive() -> None:
    hist = Histogram((0.1, 1.0))
    for v in (0.05, 0.1, 0.5, 2.0):
        hist.observe(v)
    assert hist.cumulative() == [(0.1, 2), (1.0, 3), (float("inf"), 4)]
    assert hist.count == 4 and abs(hist.sum - 2.65) < 1e-9


def test_exponential_buckets_as_prometheus() -> None:
    assert exponential_buckets(0.001, 2, 4) == (0.001, 0.002, 0.004, 0.008)


def test_go_number_formatting() -> None:
    assert [go_float(v) for v in (1.0, 0.0, 61440.0, 2147483648.0, 0.25)] == [
        "1",
        "0",
        "61440",
        "2.147483648e+09",
        "0.25",
    ]


def test_counters_keep_etcds_names_with_and_without_total() -> None:
    text = rendered(
        exact_counter("etcd_server_health_success", "ok checks", 3),
        exact_counter("etcd_server_leader_changes_seen_total", "changes", 1),
        GaugeMetricFamily("etcd_server_has_leader", "leader", value=1),
    )
    assert "# TYPE etcd_server_health_success counter\netcd_server_health_success 3\n" in text
    assert "# TYPE etcd_server_leader_changes_seen_total counter\n" in text
    assert "etcd_server_leader_changes_seen_total 1\n" in text
    assert "etcd_server_has_leader 1\n" in text


def test_grpc_families_list_every_method_and_code_from_the_start() -> None:
    stats = CallStats()
    stats.count("/etcdserverpb.KV/Put", 0)
    stats.count("/etcdserverpb.KV/Put", 0)
    stats.count("/etcdserverpb.KV/Range", grpc.StatusCode.OUT_OF_RANGE.value[0])
    text = rendered(*GrpcCollector(stats, lambda: {"/etcdserverpb.Watch/Watch": 2}).collect())
    families: dict[str, dict[tuple[str, str, str | None], float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = (s.labels["grpc_service"], s.labels["grpc_method"], s.labels.get("grpc_code"))
            families.setdefault(s.name, {})[key] = s.value
    handled, started = families["grpc_server_handled_total"], families["grpc_server_started_total"]
    received, sent = families["grpc_server_msg_received_total"], families["grpc_server_msg_sent_total"]
    assert len(handled) == len(METHOD_LABELS) * len(GO_CODE_NAMES)
    assert handled[("etcdserverpb.KV", "Put", "OK")] == 2
    assert handled[("etcdserverpb.KV", "Range", "OutOfRange")] == 1
    assert handled[("etcdserverpb.KV", "Range", "Canceled")] == 0
    assert started[("etcdserverpb.Watch", "Watch", None)] == 2
    # unary: a request received per call started, a response sent per call that succeeded
    assert received[("etcdserverpb.KV", "Range", None)] == 1 and sent[("etcdserverpb.KV", "Range", None)] == 0
    assert received[("etcdserverpb.KV", "Put", None)] == sent[("etcdserverpb.KV", "Put", None)] == 2
    assert received[("etcdserverpb.Watch", "Watch", None)] == 0  # streams: counted message by message
    assert "grpc_server_handling_seconds" not in text  # only with --metrics=extensive
    stats.track_latency = True
    stats.observe("/etcdserverpb.KV/Put", 0.002)
    text = rendered(*GrpcCollector(stats).collect())
    assert 'grpc_server_handling_seconds_bucket{grpc_method="Put",grpc_service="etcdserverpb.KV"' in text


def test_label_values_are_escaped() -> None:
    family = CounterMetricFamily("x_total", "doc", labels=["l"])
    family.add_metric(['a"b\\c\nd'], 1)
    assert 'x_total{l="a\\"b\\\\c\\nd"} 1' in rendered(family)
