"""Pure parts of the gRPC proxy: --namespace rewriting, the range cache's coherence rules, the flags."""

from __future__ import annotations

import pytest

from cluster.api import errors
from cluster.api.gen.etcdserverpb import rpc_pb2
from grpcproxy.cache import RangeCache, header_revision
from grpcproxy.config import ProxyConfigError, parse_proxy_args
from grpcproxy.metrics import ProxyMetrics
from grpcproxy.namespace import Namespace


def response(revision: int, value: bytes = b"v") -> bytes:
    return rpc_pb2.RangeResponse(
        header=rpc_pb2.ResponseHeader(revision=revision), kvs=[{"key": b"k", "value": value}], count=1
    ).SerializeToString()


# ---- namespace -------------------------------------------------------------------------------------
def test_namespace_ranges_follow_etcds_prefix_interval() -> None:
    ns = Namespace(b"t/")
    assert ns.interval(b"a", b"") == (b"t/a", b"")
    assert ns.interval(b"a", b"c") == (b"t/a", b"t/c")
    assert ns.interval(b"a", b"\x00") == (b"t/a", b"t0")  # "every key from a" stops at the namespace end
    assert ns.strip(b"t/a") == b"a"


def test_namespace_rewrites_txn_compares_and_nested_ops() -> None:
    ns = Namespace(b"t/")
    req = rpc_pb2.TxnRequest(
        compare=[rpc_pb2.Compare(key=b"c")],
        success=[rpc_pb2.RequestOp(request_txn=rpc_pb2.TxnRequest(success=[
            rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"p"))]))],
        failure=[rpc_pb2.RequestOp(
            request_delete_range=rpc_pb2.DeleteRangeRequest(key=b"d", range_end=b"\x00"))],
    )  # fmt: skip
    ns.txn_request(req)
    assert req.compare[0].key == b"t/c"
    assert req.success[0].request_txn.success[0].request_put.key == b"t/p"
    assert (req.failure[0].request_delete_range.key, req.failure[0].request_delete_range.range_end) == (
        b"t/d",
        b"t0",
    )
    with pytest.raises(errors.EMPTY_KEY):
        ns.put_request(rpc_pb2.PutRequest(key=b""))


# ---- range cache -----------------------------------------------------------------------------------
def cache() -> RangeCache:
    c = RangeCache(16, 0.0, ProxyMetrics())
    c.enabled = True
    return c


def test_a_write_invalidates_every_range_that_holds_its_key() -> None:
    c = cache()
    c.put(("", b"single"), b"k", b"", response(5), c.ticket())
    c.put(("", b"range"), b"a", b"z", response(5), c.ticket())
    c.put(("", b"from"), b"x", b"\x00", response(5), c.ticket())
    c.put(("", b"other"), b"q", b"", response(5), c.ticket())
    c.invalidate(b"k")
    assert c.get(("", b"single")) is None and c.get(("", b"range")) is None
    assert c.get(("", b"from")) is not None and c.get(("", b"other")) is not None
    c.invalidate(b"y", b"\x00")
    assert c.get(("", b"from")) is None and c.get(("", b"other")) is not None


def test_a_response_fetched_across_an_invalidation_or_older_than_the_watch_is_not_stored() -> None:
    c = cache()
    ticket = c.ticket()
    c.invalidate(b"elsewhere")
    c.put(("", b"r"), b"k", b"", response(5), ticket)
    assert c.get(("", b"r")) is None
    c.observe(7)
    c.put(("", b"r"), b"k", b"", response(6), c.ticket())  # a lagging member's answer
    assert c.get(("", b"r")) is None
    c.put(("", b"r"), b"k", b"", response(7), c.ticket())
    assert c.get(("", b"r")) == response(7)


def test_callers_never_share_entries_and_a_disabled_cache_answers_nothing() -> None:
    c = cache()
    c.put(("alice", b"r"), b"k", b"", response(5), c.ticket())
    assert c.get(("bob", b"r")) is None
    c.enabled = False
    assert c.get(("alice", b"r")) is None


def test_header_revision_reads_only_the_header() -> None:
    assert header_revision(response(42)) == 42


# ---- flags -------------------------------------------------------------------------------------------
def test_flags_take_etcds_defaults_and_refuse_what_is_not_built() -> None:
    cfg = parse_proxy_args([])
    assert (cfg.listen_addr, cfg.endpoints, cfg.advertise_client_url) == (
        "127.0.0.1:23790",
        ("127.0.0.1:2379",),
        "127.0.0.1:23790",
    )
    assert parse_proxy_args(["--metrics-addr=http://127.0.0.1:6633"]).metrics_port == 6633
    with pytest.raises(ProxyConfigError, match="invalid resolver-ttl 0"):
        parse_proxy_args(["--resolver-prefix=p"])
    with pytest.raises(ProxyConfigError, match="not supported yet"):
        parse_proxy_args(["--auto-tls"])
