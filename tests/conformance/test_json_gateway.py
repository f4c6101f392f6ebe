"""The JSON gateway (POST /v3/...) against real etcd's grpc-gateway: the same requests to both, the same
answers after normalisation (member and cluster ids and the raft term differ between any two clusters).

The cases mirror kv_cases.py (which drives the same semantics through etcdctl over gRPC): put, range
with its options, delete, txn, compaction, leases with explicit ids, the errors of each, and a watch
streamed over HTTP. Each case is a function of a `call` so that later requests can use revisions
returned by earlier ones; each runs on one etcd and one Quorum node, both fresh for this module and
given the same requests in the same order, so revisions match exactly.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from cluster.testing.http import HttpReply, b64, post, stream
from cluster.testing.procs import NodeProcess
from tests.conftest import NodeFactory

Call = Callable[[str, dict[str, Any]], Any]
_MEMBER_SPECIFIC = ("cluster_id", "member_id", "raft_term")


def normalise(value: Any) -> Any:
    """Drop what differs between any two clusters: the header's ids and term."""
    if isinstance(value, dict):
        return {
            k: normalise(v)
            for k, v in value.items()
            if not (k in _MEMBER_SPECIFIC and isinstance(v, str | int)) and k != "member_id"
        }
    if isinstance(value, list):
        return [normalise(v) for v in value]
    return value


def reply_of(reply: HttpReply) -> Any:
    body = reply.json() if reply.headers.get("content-type") == "application/json" else reply.body.decode()
    return reply.status, normalise(body)


@pytest.fixture(scope="module")
def pair(module_node_factory: NodeFactory) -> dict[str, NodeProcess]:
    return {"etcd": module_node_factory("etcd"), "quorum": module_node_factory("quorum")}


def run_both(pair: dict[str, NodeProcess], case: Callable[[Call], None]) -> None:
    results: dict[str, list[Any]] = {}
    for kind, node in pair.items():
        seen: list[Any] = []

        def call(
            path: str, body: dict[str, Any], endpoint: str = node.endpoint, out: list[Any] = seen
        ) -> Any:
            status, answer = reply_of(post(endpoint, path, body))
            out.append((path, body, status, answer))
            return answer

        case(call)
        results[kind] = seen
    assert results["etcd"], "the case made no request"
    for etcd_step, quorum_step in zip(results["etcd"], results["quorum"], strict=True):
        assert quorum_step == etcd_step


def rev(answer: dict[str, Any]) -> int:
    return int(answer["header"]["revision"])


def put(call: Call, key: str, value: str, **extra: Any) -> Any:
    return call("/v3/kv/put", {"key": b64(key), "value": b64(value), **extra})


def abc(call: Call, prefix: str) -> None:
    for key, value in (("a/1", "one"), ("a/2", "two"), ("a/3", "three"), ("b/1", "bee"), ("c", "cee")):
        put(call, prefix + key, value)


def prefix_end(prefix: str) -> str:
    return b64(prefix[:-1] + chr(ord(prefix[-1]) + 1))


# -- cases ---------------------------------------------------------------------------------------------
def case_put_then_range(call: Call) -> None:
    put(call, "p/foo", "bar")
    put(call, "p/foo", "baz", prev_kv=True)
    call("/v3/kv/range", {"key": b64("p/foo")})
    put(call, "p/empty", "")
    call("/v3/kv/range", {"key": b64("p/empty")})


def case_put_errors(call: Call) -> None:
    call("/v3/kv/put", {"key": "", "value": b64("x")})
    put(call, "pe/missing", "", ignore_value=True)
    put(call, "pe/leased", "v", lease="4660")
    put(call, "pe/k", "v")
    put(call, "pe/k", "", ignore_value=True, prev_kv=True)
    put(call, "pe/k", "w", ignore_lease=True)
    call("/v3/kv/range", {"key": b64("pe/k")})


def case_range_options(call: Call) -> None:
    abc(call, "r/")
    end = prefix_end("r/")
    call("/v3/kv/range", {"key": b64("r/a/"), "range_end": prefix_end("r/a/")})
    call("/v3/kv/range", {"key": b64("r/a/3"), "range_end": end})
    call("/v3/kv/range", {"key": b64("r/"), "range_end": end, "limit": 2})
    call("/v3/kv/range", {"key": b64("r/"), "range_end": end, "count_only": True})
    call("/v3/kv/range", {"key": b64("r/"), "range_end": end, "keys_only": True})
    call(
        "/v3/kv/range", {"key": b64("r/"), "range_end": end, "sort_target": "VALUE", "sort_order": "DESCEND"}
    )
    call("/v3/kv/range", {"key": b64("r/"), "range_end": end, "sortTarget": 1, "sortOrder": 1, "limit": "3"})
    call("/v3/kv/range", {"key": b64("r/c"), "serializable": True})
    call("/v3/kv/range", {"key": b64("r/nope")})


def case_range_revisions(call: Call) -> None:
    first = put(call, "rv/foo", "1")
    put(call, "rv/foo", "2")
    last = put(call, "rv/foo", "3")
    call("/v3/kv/range", {"key": b64("rv/foo"), "revision": rev(first)})
    call("/v3/kv/range", {"key": b64("rv/foo"), "revision": str(rev(last) + 100)})
    call("/v3/kv/compaction", {"revision": rev(last) - 1})
    call("/v3/kv/range", {"key": b64("rv/foo"), "revision": rev(first)})
    call("/v3/kv/range", {"key": b64("rv/foo"), "revision": rev(last) - 1})
    call("/v3/kv/compaction", {"revision": rev(last) - 1})
    call("/v3/kv/compaction", {"revision": rev(last) + 100})


def case_delete(call: Call) -> None:
    abc(call, "d/")
    call("/v3/kv/deleterange", {"key": b64("d/a/2")})
    call("/v3/kv/deleterange", {"key": b64("d/nope")})
    call("/v3/kv/deleterange", {"key": b64("d/a/"), "range_end": prefix_end("d/a/"), "prev_kv": True})
    call("/v3/kv/deleterange", {"key": ""})
    call("/v3/kv/range", {"key": b64("d/"), "range_end": prefix_end("d/"), "keys_only": True})


def case_txn(call: Call) -> None:
    put(call, "t/k", "v1")
    compare_value = {"key": b64("t/k"), "target": "VALUE", "result": "EQUAL", "value": b64("v1")}
    call(
        "/v3/kv/txn",
        {
            "compare": [compare_value],
            "success": [
                {"request_put": {"key": b64("t/k"), "value": b64("v2")}},
                {"request_range": {"key": b64("t/k")}},
            ],
            "failure": [{"request_put": {"key": b64("t/k"), "value": b64("failed")}}],
        },
    )
    call(
        "/v3/kv/txn",
        {
            "compare": [{"key": b64("t/k"), "target": "VERSION", "result": "GREATER", "version": "5"}],
            "success": [{"request_put": {"key": b64("t/ok"), "value": b64("yes")}}],
            "failure": [
                {"request_delete_range": {"key": b64("t/k"), "prev_kv": True}},
                {"request_range": {"key": b64("t/"), "range_end": prefix_end("t/")}},
            ],
        },
    )
    call(
        "/v3/kv/txn",
        {"compare": [{"key": b64("t/ghost"), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}]},
    )
    call(
        "/v3/kv/txn",
        {
            "success": [
                {"request_put": {"key": b64("t/dup"), "value": b64("1")}},
                {"request_put": {"key": b64("t/dup"), "value": b64("2")}},
            ]
        },
    )


def case_leases(call: Call) -> None:
    call("/v3/lease/grant", {"TTL": 60, "ID": "4096"})
    call("/v3/lease/grant", {"TTL": 60, "ID": "4096"})
    put(call, "l/k", "v", lease="4096")
    call("/v3/kv/range", {"key": b64("l/k")})
    call("/v3/kv/lease/leases", {})
    call("/v3/lease/revoke", {"ID": "4096"})
    call("/v3/kv/lease/revoke", {"ID": "4096"})
    call("/v3/kv/range", {"key": b64("l/k")})


def case_election_and_lock(call: Call) -> None:
    call("/v3/lease/grant", {"TTL": 60, "ID": "32768"})
    campaign = call("/v3/election/campaign", {"name": b64("el"), "lease": "32768", "value": b64("v1")})
    call("/v3/election/leader", {"name": b64("el")})
    call("/v3/election/proclaim", {"leader": campaign.get("leader", {}), "value": b64("v2")})
    call("/v3/election/leader", {"name": b64("el")})
    call("/v3/election/resign", {"leader": campaign.get("leader", {})})
    call("/v3/election/leader", {"name": b64("el")})
    call("/v3/election/proclaim", {"value": b64("v3")})
    lock = call("/v3/lock/lock", {"name": b64("lk"), "lease": "32768"})
    call("/v3/lock/unlock", {"key": lock.get("key", "")})
    call("/v3/lease/revoke", {"ID": "32768"})


CASES = {
    name[len("case_") :]: fn
    for name, fn in sorted(globals().items())
    if name.startswith("case_") and callable(fn)
}


@pytest.mark.parametrize("name", list(CASES))
def test_gateway_answers_as_etcd(pair: dict[str, NodeProcess], name: str) -> None:
    run_both(pair, CASES[name])


def test_time_to_live_as_etcd(pair: dict[str, NodeProcess]) -> None:
    def case(call: Call) -> None:
        call("/v3/lease/grant", {"TTL": 600, "ID": "8192"})
        put(call, "ttl/k", "v", lease="8192")
        answer = call("/v3/kv/lease/timetolive", {"ID": "8192", "keys": True})
        assert 590 <= int(answer["TTL"]) <= 600
        answer["TTL"] = "ttl"  # counts down
        call("/v3/lease/timetolive", {"ID": "1"})

    run_both(pair, case)


def watch_lines(node: NodeProcess, prefix: str, start: int, writes: Callable[[], None]) -> list[Any]:
    """Open a watch over HTTP, make `writes` from another thread once it is created, read 4 results."""
    body = {"create_request": {"key": b64(prefix), "range_end": prefix_end(prefix), "start_revision": start,
                               "prev_kv": True}}  # fmt: skip
    lines = []
    with stream(node.endpoint, "/v3/watch", body) as reply:
        assert reply.status == 200
        assert reply.response.getheader("Transfer-Encoding") == "chunked"
        lines.append(reply.read_line())
        writer = threading.Thread(target=writes)
        writer.start()
        while len(lines) < 4:
            lines.append(reply.read_line())
        writer.join()
    return [normalise(line) for line in lines]


def test_watch_streams_history_and_live_events_as_etcd(pair: dict[str, NodeProcess]) -> None:
    out = {}
    for kind, node in pair.items():
        first = post(node.endpoint, "/v3/kv/put", {"key": b64("w/a"), "value": b64("1")}).json()

        def writes(endpoint: str = node.endpoint) -> None:
            time.sleep(0.1)
            post(endpoint, "/v3/kv/put", {"key": b64("w/a"), "value": b64("2")})
            post(endpoint, "/v3/kv/deleterange", {"key": b64("w/"), "range_end": prefix_end("w/")})

        out[kind] = watch_lines(node, "w/", rev(first), writes)
    assert out["quorum"] == out["etcd"]
    assert out["quorum"][0]["result"]["created"] is True
    assert [e["type"] for e in out["quorum"][3]["result"]["events"]] == ["DELETE"]


def test_streamed_lease_keep_alive_as_etcd(pair: dict[str, NodeProcess]) -> None:
    def case(call: Call) -> None:
        call("/v3/lease/grant", {"TTL": 30, "ID": "16384"})

    run_both(pair, case)
    answers = {}
    for kind, node in pair.items():
        reply = post(node.endpoint, "/v3/lease/keepalive", {"ID": "16384"})
        answers[kind] = (reply.status, normalise(reply.lines()))
        assert reply.headers["transfer-encoding"] == "chunked"
    assert answers["quorum"] == answers["etcd"]
