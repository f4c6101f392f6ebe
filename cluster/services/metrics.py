"""/metrics: etcd's metric names in Prometheus text format, read from the member at scrape time.

Nothing here runs per request. Counters the member keeps anyway (Raft indexes, leader changes,
pending and failed proposals, the RPC engine's per-method counts, watch hub statistics) are read by
custom collectors when Prometheus scrapes; storage timings are observed once per WAL batch and per
backend commit into lock-free `Histogram`s; peer round trips are probed every few seconds, as
etcd's rafthttp prober does.

Names, help texts, label names and buckets are etcd 3.4's (etcdserver/metrics.go, wal/metrics.go,
mvcc/backend/metrics.go, rafthttp/metrics.go, go-grpc-prometheus), so dashboards and alert rules
written for etcd work unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import grpc
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.utils import floatToGoString

from cluster.api.grpc_names import METHODS
from cluster.rpc.stats import CallStats, Histogram, exponential_buckets
from cluster.server import ids
from cluster.server.node import CLUSTER_VERSION, SERVER_VERSION

if TYPE_CHECKING:
    from cluster.server.node import QuorumNode

log = logging.getLogger("quorum.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
WAL_FSYNC_BUCKETS = exponential_buckets(0.001, 2, 14)
BACKEND_COMMIT_BUCKETS = exponential_buckets(0.001, 2, 14)
PEER_RTT_BUCKETS = exponential_buckets(0.0001, 2, 14)
PEER_PROBE_INTERVAL_S = 5.0

GO_CODE_NAMES: dict[int, str] = {
    code.value[0]: "".join(part.capitalize() for part in code.name.split("_")) for code in grpc.StatusCode
}
GO_CODE_NAMES[grpc.StatusCode.OK.value[0]] = "OK"
GO_CODE_NAMES[grpc.StatusCode.CANCELLED.value[0]] = "Canceled"
"""grpc-go's codes.Code names, which go-grpc-prometheus puts in the grpc_code label."""

_HEALTH_METHODS = (
    ("/grpc.health.v1.Health/Check", "unary"),
    ("/grpc.health.v1.Health/Watch", "server_stream"),
)


_PEER_COUNTERS = (
    # (name, help, label, PeerStats field): rafthttp's per-peer counters
    ("etcd_network_peer_sent_bytes_total", "The total number of bytes sent to peers.", "To", "bytes_sent"),
    ("etcd_network_peer_received_bytes_total", "The total number of bytes received from peers.", "From",
     "bytes_received"),
    ("etcd_network_peer_sent_failures_total", "The total number of send failures from peers.", "To",
     "messages_dropped"),
    ("etcd_network_peer_received_failures_total", "The total number of receive failures from peers.", "From",
     "messages_malformed"),
    ("etcd_network_snapshot_send_success", "Total number of successful snapshot sends", "To",
     "snapshots_sent"),
    ("etcd_network_snapshot_send_failures", "Total number of snapshot send failures", "To",
     "snapshot_send_failures"),
    ("etcd_network_snapshot_receive_success", "Total number of successful snapshot receives", "From",
     "snapshots_received"),
)  # fmt: skip


def _peer_families(stats: dict[int, Any]) -> Iterator[Metric]:
    """etcd_network_* counters per peer from the transport's PeerStats (a message dropped on the way
    to a peer, queue full or connection lost, is a send failure, as rafthttp counts it)."""
    for name, doc, label, field in _PEER_COUNTERS:
        family = CounterMetricFamily(name, doc, labels=[label])
        for peer_id, peer in sorted(stats.items()):
            family.add_metric([ids.format_id(peer_id)], getattr(peer, field))
        yield family


def _method_labels() -> dict[str, tuple[str, str, str]]:
    """path -> (grpc_type, grpc_service, grpc_method) for every method the client port serves."""
    out = {path: (info.grpc_type, info.service, info.method) for path, info in METHODS.items()}
    for path, kind in _HEALTH_METHODS:
        service, method = path[1:].split("/")
        out[path] = (kind, service, method)
    return out


METHOD_LABELS = _method_labels()


def _histogram(
    name: str, doc: str, hist: Histogram, labels: Iterable[str] = (), values: Iterable[str] = ()
) -> Any:
    family = HistogramMetricFamily(name, doc, labels=list(labels))
    add_histogram(family, hist, list(values))
    return family


def add_histogram(family: HistogramMetricFamily, hist: Histogram, values: list[str]) -> None:
    buckets = [(floatToGoString(bound), float(count)) for bound, count in hist.cumulative()]
    family.add_metric(values, buckets, hist.sum)


class StorageTimings:
    """Per-batch storage histograms, fed by the WAL and backend observers."""

    def __init__(self) -> None:
        self.wal_fsync = Histogram(WAL_FSYNC_BUCKETS)
        self.backend_commit = Histogram(BACKEND_COMMIT_BUCKETS)


class HealthCounters:
    """etcd_server_health_success / _failures, counted by the /health handler."""

    def __init__(self) -> None:
        self.success = 0
        self.failures = 0


class MemberCollector:
    """etcd_server_*, etcd_disk_*, etcd_mvcc_*, etcd_debugging_mvcc_* and etcd_network_* families."""

    def __init__(self, node: QuorumNode, timings: StorageTimings, health: HealthCounters) -> None:
        self._node = node
        self._timings = timings
        self._health = health
        self.peer_rtt: dict[int, Histogram] = {}

    def collect(self) -> Iterator[Metric]:
        node = self._node
        driver = node.driver
        lead = driver.leader.lead
        yield _gauge(
            "etcd_server_has_leader",
            "Whether or not a leader exists. 1 is existence, 0 is not.",
            1 if lead else 0,
        )
        yield _gauge(
            "etcd_server_is_leader",
            "Whether or not this member is a leader. 1 if is, 0 otherwise.",
            1 if node.is_leader() else 0,
        )
        yield _gauge(
            "etcd_server_is_learner", "Whether or not this member is a learner. 1 if is, 0 otherwise.", 0
        )
        yield exact_counter(
            "etcd_server_leader_changes_seen_total",
            "The number of leader changes seen.",
            driver.leader_changes,
        )
        yield _gauge(
            "etcd_server_proposals_committed_total",
            "The total number of consensus proposals committed.",
            node.committed_index,
        )
        yield _gauge(
            "etcd_server_proposals_applied_total",
            "The total number of consensus proposals applied.",
            node.applied_index,
        )
        yield _gauge(
            "etcd_server_proposals_pending",
            "The current number of pending proposals to commit.",
            node.pending_proposals,
        )
        yield exact_counter(
            "etcd_server_proposals_failed_total",
            "The total number of failed proposals seen.",
            node.proposals_failed,
        )
        yield _gauge(
            "etcd_server_quota_backend_bytes",
            "Current backend storage quota size in bytes.",
            node.cfg.quota_bytes,
        )
        yield _labelled_gauge(
            "etcd_server_id",
            "Server or member ID in hexadecimal format. 1 for 'server_id' label with current ID.",
            "server_id",
            ids.format_id(node.member_id),
        )
        yield _labelled_gauge(
            "etcd_server_version",
            "Which version is running. 1 for 'server_version' label with current version.",
            "server_version",
            SERVER_VERSION,
        )
        cluster_version = (node.cluster_version or CLUSTER_VERSION).rsplit(".", 1)[0]
        yield _labelled_gauge(
            "etcd_cluster_version",
            "Which version is running. 1 for 'cluster_version' label with current cluster version",
            "cluster_version",
            cluster_version,
        )
        yield exact_counter(
            "etcd_server_health_success", "The total number of successful health checks", self._health.success
        )
        yield exact_counter(
            "etcd_server_health_failures", "The total number of failed health checks", self._health.failures
        )
        yield _histogram(
            "etcd_disk_wal_fsync_duration_seconds",
            "The latency distributions of fsync called by WAL.",
            self._timings.wal_fsync,
        )
        yield _histogram(
            "etcd_disk_backend_commit_duration_seconds",
            "The latency distributions of commit called by backend.",
            self._timings.backend_commit,
        )
        backend = node.backend
        yield _gauge(
            "etcd_mvcc_db_total_size_in_bytes",
            "Total size of the underlying database physically allocated in bytes.",
            backend.size(),
        )
        yield _gauge(
            "etcd_mvcc_db_total_size_in_use_in_bytes",
            "Total size of the underlying database logically in use in bytes.",
            backend.size_in_use(),
        )
        stats = node.watch_hub.statistics()
        yield _gauge("etcd_debugging_mvcc_watcher_total", "Total number of watchers.", stats.watchers)
        yield _gauge(
            "etcd_debugging_mvcc_watch_stream_total", "Total number of watch streams.", stats.streams
        )
        yield _gauge(
            "etcd_debugging_mvcc_slow_watcher_total",
            "Total number of unsynced slow watchers.",
            stats.unsynced,
        )
        rtt = HistogramMetricFamily(
            "etcd_network_peer_round_trip_time_seconds",
            "Round-Trip-Time histogram between peers",
            labels=["To"],
        )
        for peer_id, hist in sorted(self.peer_rtt.items()):
            add_histogram(rtt, hist, [ids.format_id(peer_id)])
        yield rtt
        peers = getattr(node, "peers", None)
        yield from _peer_families(peers.transport.stats() if peers is not None else {})

    def observe_rtt(self, peer_id: int, seconds: float) -> None:
        hist = self.peer_rtt.get(peer_id)
        if hist is None:
            hist = self.peer_rtt[peer_id] = Histogram(PEER_RTT_BUCKETS)
        hist.observe(seconds)


class GrpcCollector:
    """go-grpc-prometheus's server metrics from the engine's `CallStats`; every method and code is
    listed from the start (zeros included), as go-grpc-prometheus's InitializeMetrics does."""

    def __init__(self, stats: CallStats, active: Any = None) -> None:
        self._stats = stats
        self._active = active

    def collect(self) -> Iterator[Metric]:
        labels = ["grpc_code", "grpc_method", "grpc_service", "grpc_type"]
        handled = CounterMetricFamily(
            "grpc_server_handled_total",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            labels=labels,
        )
        counts = self._stats.handled
        started = CounterMetricFamily(
            "grpc_server_started_total",
            "Total number of RPCs started on the server.",
            labels=["grpc_method", "grpc_service", "grpc_type"],
        )
        received = CounterMetricFamily(
            "grpc_server_msg_received_total",
            "Total number of RPC stream messages received on the server.",
            labels=["grpc_method", "grpc_service", "grpc_type"],
        )
        sent = CounterMetricFamily(
            "grpc_server_msg_sent_total",
            "Total number of gRPC stream messages sent by the server.",
            labels=["grpc_method", "grpc_service", "grpc_type"],
        )
        in_flight = self._active() if self._active is not None else {}
        ok = grpc.StatusCode.OK.value[0]
        for path, (kind, service, method) in sorted(METHOD_LABELS.items(), key=lambda kv: kv[1][1:]):
            total = 0
            for code, code_name in GO_CODE_NAMES.items():
                n = counts.get((path, code), 0)
                total += n
                handled.add_metric([code_name, method, service, kind], n)
            calls = total + in_flight.get(path, 0)
            started.add_metric([method, service, kind], calls)
            # go-grpc-prometheus counts a unary request as received when the call starts and its
            # response as sent when the call succeeds; streamed messages one by one.
            streams_in = kind in ("client_stream", "bidi_stream")
            streams_out = kind in ("server_stream", "bidi_stream")
            received.add_metric(
                [method, service, kind], self._stats.received.get(path, 0) if streams_in else calls
            )
            sent.add_metric(
                [method, service, kind],
                self._stats.sent.get(path, 0) if streams_out else counts.get((path, ok), 0),
            )
        yield handled
        yield started
        yield received
        yield sent
        if self._stats.track_latency:
            seconds = HistogramMetricFamily(
                "grpc_server_handling_seconds",
                "Histogram of response latency (seconds) of gRPC that had been application-level handled "
                "by the server.",
                labels=["grpc_method", "grpc_service", "grpc_type"],
            )
            for path, (kind, service, method) in sorted(METHOD_LABELS.items(), key=lambda kv: kv[1][1:]):
                add_histogram(seconds, self._stats.latency.get(path) or Histogram(), [method, service, kind])
            yield seconds


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def exact_counter(name: str, doc: str, value: float) -> Metric:
    """A counter named exactly `name` (with or without "_total", as etcd names it)."""
    family = Metric(name, doc, "counter")
    family.add_sample(name, {}, value)
    return family


def _labelled_gauge(name: str, doc: str, label: str, value: str) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=[label])
    family.add_metric([value], 1)
    return family


class MemberMetrics:
    """The registry of one member and the background work feeding it (peer probes)."""

    def __init__(self, node: QuorumNode, call_stats: CallStats, active_calls: Any = None) -> None:
        self.node = node
        self.timings = StorageTimings()
        self.health = HealthCounters()
        self.member = MemberCollector(node, self.timings, self.health)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.member)  # type: ignore[arg-type]
        self.registry.register(GrpcCollector(call_stats, active_calls))  # type: ignore[arg-type]
        ProcessCollector(registry=self.registry)
        call_stats.track_latency = node.cfg.metrics == "extensive"
        node.wal.fsync_observer = self.timings.wal_fsync.observe
        node.backend.commit_observer = self.timings.backend_commit.observe
        self._prober: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._prober = asyncio.get_running_loop().create_task(self._probe_peers(), name="peer-rtt")

    async def stop(self) -> None:
        if self._prober is not None:
            self._prober.cancel()
            with contextlib.suppress(BaseException):
                await self._prober

    def render(self) -> bytes:
        return render(self.registry)

    async def _probe_peers(self) -> None:
        await asyncio.sleep(0.2)
        while True:
            try:
                for peer_id, seconds in (await self.node.peers.transport.round_trips()).items():
                    self.member.observe_rtt(peer_id, seconds)
            except Exception:  # a probe failure must never end the prober
                log.debug("peer round-trip probe failed", exc_info=True)
            await asyncio.sleep(PEER_PROBE_INTERVAL_S)


_TYPES = {"unknown": "untyped", "info": "gauge", "stateset": "gauge", "gaugehistogram": "histogram"}


def render(registry: CollectorRegistry) -> bytes:
    """Prometheus text format (0.0.4) with each family under the name its samples carry.

    prometheus_client's own `generate_latest` always names a counter family "<name>_total"; etcd has
    counters without that suffix (etcd_server_health_success), so the family name is taken from
    its samples instead.
    """
    out: list[str] = []
    for metric in registry.collect():
        name = metric.name
        if metric.type == "counter" and any(s.name == name + "_total" for s in metric.samples):
            name += "_total"
        doc = metric.documentation.replace("\\", r"\\").replace("\n", r"\n")
        out.append(f"# HELP {name} {doc}\n# TYPE {name} {_TYPES.get(metric.type, metric.type)}\n")
        for sample in metric.samples:
            if sample.name.endswith("_created"):
                continue
            if sample.labels:
                labels = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(sample.labels.items()))
                out.append(f"{sample.name}{{{labels}}} {go_float(sample.value)}\n")
            else:
                out.append(f"{sample.name} {go_float(sample.value)}\n")
    return "".join(out).encode()


def go_float(value: float) -> str:
    """strconv.FormatFloat(v, 'g', -1, 64), as Go's Prometheus client writes values ("1", not "1.0")."""
    text = floatToGoString(value)
    return text[:-2] if text.endswith(".0") else text


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
