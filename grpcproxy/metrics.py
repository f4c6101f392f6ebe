"""The proxy's own metrics, under etcd 3.4's grpc-proxy names (proxy/grpcproxy/metrics.go), plus
go-grpc-prometheus's server metrics from the RPC engine. Counters are plain integers the services
bump; the collector reads them at scrape time. etcd declares the cache hit/miss counts as gauges,
and so do we, so dashboards built for etcd's proxy read them unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector

from cluster.rpc.stats import CallStats
from cluster.services.metrics import GrpcCollector, exact_counter, render


@dataclass(slots=True)
class ProxyMetrics:
    watchers_coalescing: int = 0
    events_coalescing: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    cache_keys: Callable[[], int] = lambda: 0
    keepalives_merged: int = 0
    """Keep-alive requests answered from a renewal made for another request (Quorum's addition)."""


class ProxyCollector:
    def __init__(self, metrics: ProxyMetrics) -> None:
        self._m = metrics

    def collect(self) -> Iterator[Metric]:
        m = self._m
        yield GaugeMetricFamily(
            "etcd_grpc_proxy_watchers_coalescing_total",
            "Total number of current watchers coalescing",
            value=m.watchers_coalescing,
        )
        yield exact_counter(
            "etcd_grpc_proxy_events_coalescing_total",
            "Total number of events coalescing",
            m.events_coalescing,
        )
        yield GaugeMetricFamily(
            "etcd_grpc_proxy_cache_keys_total", "Total number of keys/ranges cached", value=m.cache_keys()
        )
        yield GaugeMetricFamily(
            "etcd_grpc_proxy_cache_hits_total", "Total number of cache hits", value=m.cache_hits
        )
        yield GaugeMetricFamily(
            "etcd_grpc_proxy_cache_misses_total", "Total number of cache misses", value=m.cache_misses
        )
        yield exact_counter(
            "quorum_grpc_proxy_keepalives_merged_total",
            "Lease keep-alive requests answered by a renewal shared with other requests",
            m.keepalives_merged,
        )


def proxy_registry(metrics: ProxyMetrics, stats: CallStats) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ProxyCollector(metrics))  # type: ignore[arg-type]
    registry.register(GrpcCollector(stats))  # type: ignore[arg-type]
    ProcessCollector(registry=registry)
    return registry


__all__ = ["ProxyMetrics", "proxy_registry", "render"]
