"""HTTP/1.1 on the client port and on --listen-metrics-urls: /metrics, /health, /version, /livez,
/readyz, and what bad HTTP input gets — held against real etcd where etcd answers the same path."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cluster.api.gen.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from cluster.testing.http import b64, get, post, raw_exchange, status_of, stream
from cluster.testing.ports import free_port
from cluster.testing.procs import NodeProcess
from cluster.testing.rawkv import RawKV
from tests.conftest import NodeFactory

ETCD_METRIC_NAMES = (
    "etcd_server_has_leader",
    "etcd_server_leader_changes_seen_total",
    "etcd_server_proposals_committed_total",
    "etcd_server_proposals_applied_total",
    "etcd_server_proposals_pending",
    "etcd_server_proposals_failed_total",
    "etcd_disk_wal_fsync_duration_seconds_bucket",
    "etcd_disk_backend_commit_duration_seconds_bucket",
    "etcd_mvcc_db_total_size_in_bytes",
    "etcd_mvcc_db_total_size_in_use_in_bytes",
    "etcd_server_quota_backend_bytes",
    "etcd_debugging_mvcc_watcher_total",
    "grpc_server_handled_total",
    "grpc_server_handling_seconds_bucket",
    "grpc_server_msg_received_total",
    "grpc_server_msg_sent_total",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_open_fds",
    "process_start_time_seconds",
)


def scrape(endpoint: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Sample name -> [(labels, value)], parsed with prometheus_client's own text parser."""
    reply = get(endpoint, "/metrics")
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(reply.body.decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def value(samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    for have, v in samples[name]:
        if all(have.get(k) == want for k, want in labels.items()):
            return v
    raise KeyError(f"{name}{labels}")


@pytest.fixture(scope="module")
def metrics_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def quorum(module_node_factory: NodeFactory, metrics_port: int) -> NodeProcess:
    return module_node_factory(
        "quorum", flags=[f"--listen-metrics-urls=http://127.0.0.1:{metrics_port}", "--metrics=extensive"]
    )


@pytest.fixture(scope="module")
def both(module_node_factory: NodeFactory, quorum: NodeProcess) -> dict[str, NodeProcess]:
    return {"etcd": module_node_factory("etcd"), "quorum": quorum}


# -- /metrics --------------------------------------------------------------------------------------------
def test_metrics_parse_and_carry_etcds_names(quorum: NodeProcess) -> None:
    with RawKV(quorum.endpoint) as kv:
        kv.put(b"m", b"1")
    # The put's backend commit follows within --backend-batch-interval (10 ms by default).
    deadline = time.monotonic() + 5
    while True:
        samples = scrape(quorum.endpoint)
        committed = value(samples, "etcd_disk_backend_commit_duration_seconds_count")
        if committed >= 1 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    missing = [name for name in ETCD_METRIC_NAMES if name not in samples]
    assert not missing, missing
    assert value(samples, "etcd_server_has_leader") == 1
    assert value(samples, "etcd_server_leader_changes_seen_total") >= 1
    assert value(samples, "etcd_server_proposals_applied_total") >= 2
    assert value(samples, "etcd_disk_wal_fsync_duration_seconds_count") >= 1
    assert committed >= 1
    assert value(samples, "etcd_server_quota_backend_bytes") == 2 * 1024**3
    assert value(samples, "etcd_mvcc_db_total_size_in_bytes") >= value(
        samples, "etcd_mvcc_db_total_size_in_use_in_bytes"
    )


def test_metrics_count_grpc_calls_by_method_and_code(quorum: NodeProcess) -> None:
    labels = {"grpc_method": "Put", "grpc_service": "etcdserverpb.KV", "grpc_type": "unary"}
    before = scrape(quorum.endpoint)
    with RawKV(quorum.endpoint) as kv:
        for i in range(5):
            kv.put(b"count/%d" % i, b"x")
    after = scrape(quorum.endpoint)
    ok = "grpc_server_handled_total"
    assert value(after, ok, grpc_code="OK", **labels) - value(before, ok, grpc_code="OK", **labels) == 5
    assert value(after, ok, grpc_code="Unavailable", **labels) == 0  # every code is listed from the start
    hist = "grpc_server_handling_seconds_count"
    assert value(after, hist, **labels) - value(before, hist, **labels) == 5
    for name in ("grpc_server_msg_received_total", "grpc_server_msg_sent_total"):  # unary: one each way
        assert value(after, name, **labels) - value(before, name, **labels) == 5


def test_metrics_count_stream_messages_one_by_one(quorum: NodeProcess) -> None:
    labels = {"grpc_method": "Watch", "grpc_service": "etcdserverpb.Watch", "grpc_type": "bidi_stream"}
    before = scrape(quorum.endpoint)
    done = threading.Event()

    def requests() -> Iterator[rpc_pb2.WatchRequest]:
        create = rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=b"msgs/k"))
        yield create
        yield create
        done.wait(10)

    with grpc.insecure_channel(quorum.endpoint) as channel:
        stream = rpc_pb2_grpc.WatchStub(channel).Watch(requests(), timeout=10)
        assert next(stream).created and next(stream).created
        with RawKV(quorum.endpoint) as kv:
            kv.put(b"msgs/k", b"1")
        assert len(next(stream).events) == 1 and len(next(stream).events) == 1
        done.set()
        stream.cancel()
    after = scrape(quorum.endpoint)
    received = "grpc_server_msg_received_total"
    sent = "grpc_server_msg_sent_total"
    assert value(after, received, **labels) - value(before, received, **labels) == 2
    assert value(after, sent, **labels) - value(before, sent, **labels) == 4


def test_http_watchers_are_counted_and_removed_with_their_connection(quorum: NodeProcess) -> None:
    before = value(scrape(quorum.endpoint), "etcd_debugging_mvcc_watcher_total")
    with stream(quorum.endpoint, "/v3/watch", {"create_request": {"key": b64("w")}}) as reply:
        assert reply.read_line()["result"]["created"] is True
        assert value(scrape(quorum.endpoint), "etcd_debugging_mvcc_watcher_total") == before + 1
    deadline = time.monotonic() + 5  # the client went away: its watcher goes with it
    while value(scrape(quorum.endpoint), "etcd_debugging_mvcc_watcher_total") != before:
        assert time.monotonic() < deadline, "watcher of a closed HTTP watch still registered"
        time.sleep(0.05)


def test_metrics_port_serves_metrics_and_health_only(quorum: NodeProcess, metrics_port: int) -> None:
    endpoint = f"127.0.0.1:{metrics_port}"
    assert "etcd_server_has_leader" in scrape(endpoint)
    health = get(endpoint, "/health")
    assert (health.status, health.body) == (200, b'{"health":"true"}')
    assert get(endpoint, "/version").status == 404
    assert post(endpoint, "/v3/kv/range", {"key": b64("a")}).status == 404


# -- /health, /version, /livez, /readyz ------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["etcd", "quorum"])
def test_health_version_and_methods_as_etcd(both: dict[str, NodeProcess], kind: str) -> None:
    endpoint = both[kind].endpoint
    health = get(endpoint, "/health")
    assert (health.status, health.body) == (200, b'{"health":"true"}')
    assert health.headers["content-type"] == "text/plain; charset=utf-8"
    assert health.headers["access-control-allow-origin"] == "*"
    assert post(endpoint, "/health").status == 405
    assert get(endpoint, "/health?exclude=NOSPACE").status == 200
    version = get(endpoint, "/version")
    assert version.status == 200 and version.headers["content-type"] == "application/json"
    status = post(endpoint, "/v3/maintenance/status", {}).json()
    assert version.json() == {"etcdserver": status["version"], "etcdcluster": "3.4.0"}
    assert get(endpoint, "/nowhere").body == b"404 page not found\n"


def test_livez_and_readyz_as_etcd_3_5(quorum: NodeProcess) -> None:
    assert get(quorum.endpoint, "/livez").body == b"ok\n"
    assert get(quorum.endpoint, "/livez?verbose").body == b"[+]serializable_read ok\nok\n"
    verbose = get(quorum.endpoint, "/readyz?verbose&exclude=non_learner")
    assert verbose.status == 200
    assert verbose.body.decode().splitlines() == [
        "[+]data_corruption ok",
        "[+]serializable_read ok",
        "[+]linearizable_read ok",
        "ok",
    ]
    assert get(quorum.endpoint, "/readyz/linearizable_read").body == b"ok\n"
    assert get(quorum.endpoint, "/readyz/nope").status == 404


def test_health_false_without_leader_and_peer_round_trips(node_factory: NodeFactory) -> None:
    nodes = node_factory.cluster("quorum", 3)
    survivor = nodes[0]
    deadline = time.monotonic() + 20
    peers: set[str] = set()
    while len(peers) < 2:  # each peer's first probe lands on its own schedule
        assert time.monotonic() < deadline, f"peer round trips measured only for {peers}"
        samples = scrape(survivor.endpoint)
        counts = samples.get("etcd_network_peer_round_trip_time_seconds_count", [])
        peers = {labels["To"] for labels, _ in counts}
        time.sleep(0.2)
    assert len(peers) == 2
    assert get(survivor.endpoint, "/health").status == 200
    for node in nodes[1:]:
        node.kill()
    deadline = time.monotonic() + 10
    while (health := get(survivor.endpoint, "/health")).status == 200:
        assert time.monotonic() < deadline, "still healthy without a quorum"
        time.sleep(0.2)
    assert (health.status, health.body) == (503, b'{"health":"false"}\n')
    ready = get(survivor.endpoint, "/readyz")
    assert ready.status == 503 and b"[-]linearizable_read failed" in ready.body
    # prometheus_client's parser names every counter sample "<name>_total", etcd's unsuffixed ones too
    assert value(scrape(survivor.endpoint), "etcd_server_health_failures_total") >= 1


@pytest.mark.parametrize("kind", ["etcd", "quorum"])
def test_health_false_with_an_active_alarm_unless_excluded(node_factory: NodeFactory, kind: str) -> None:
    node = node_factory(kind, flags=[f"--quota-backend-bytes={4 * 1024 * 1024}"])
    big = b64(b"v" * 500_000)
    for i in range(40):
        reply = post(node.endpoint, "/v3/kv/put", {"key": b64(f"fill/{i}"), "value": big})
        if reply.status != 200:
            break
    else:
        pytest.fail("the quota never refused a put")
    assert reply.json()["error"] == "etcdserver: mvcc: database space exceeded"
    alarms = post(node.endpoint, "/v3/maintenance/alarm", {}).json()
    assert [a["alarm"] for a in alarms["alarms"]] == ["NOSPACE"]
    health = get(node.endpoint, "/health")
    assert (health.status, health.body) == (503, b'{"health":"false"}\n')
    assert get(node.endpoint, "/health?exclude=NOSPACE").body == b'{"health":"true"}'


# -- HTTP/1.1 itself -------------------------------------------------------------------------------------
def test_keep_alive_serves_pipelined_requests_in_order(quorum: NodeProcess) -> None:
    requests = (
        b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /v3/kv/range HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
        b"GET /version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    raw = raw_exchange(quorum.endpoint, requests)
    assert raw.count(b"HTTP/1.1 ") == 3
    assert raw.index(b'{"health":"true"}') < raw.index(b"key is not provided") < raw.index(b'{"etcdserver"')


def test_chunked_request_body(quorum: NodeProcess) -> None:
    body = b'{"key":"' + b64("chunked").encode() + b'","value":"' + b64("yes").encode() + b'"}'
    half = len(body) // 2
    raw = raw_exchange(
        quorum.endpoint,
        b"POST /v3/kv/put HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        + b"%x\r\n%b\r\n%x\r\n%b\r\n0\r\n\r\n" % (half, body[:half], len(body) - half, body[half:]),
    )
    assert status_of(raw) == 200
    got = post(quorum.endpoint, "/v3/kv/range", {"key": b64("chunked")}).json()
    assert got["kvs"][0]["value"] == b64("yes")


BAD_INPUTS: dict[str, tuple[str, bytes]] = {
    "malformed_json": ("/v3/kv/range", b"{bad"),
    "truncated_json": ("/v3/kv/range", b'{"key":'),
    "json_missing_comma": ("/v3/kv/txn", b'{"compare":[{} {}]}'),
    "wrong_base64": ("/v3/kv/range", b'{"key":"!!!"}'),
    "unpadded_base64": ("/v3/kv/put", b'{"key":"Zm9","value":"YmFy"}'),
    "array_body": ("/v3/kv/range", b"[]"),
    "unknown_path": ("/v3/nope", b"{}"),
    "unknown_service": ("/v3alpha/kv/range", b"{}"),
    "oversized_message": ("/v3/kv/put", b'{"key":"Zm9v","value":"' + b64(b"x" * (2 << 20)).encode() + b'"}'),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_gateway_input_is_answered_as_etcd_does(both: dict[str, NodeProcess], case: str) -> None:
    path, body = BAD_INPUTS[case]
    replies = {kind: post(node.endpoint, path, body) for kind, node in both.items()}
    etcd, quorum = replies["etcd"], replies["quorum"]
    assert quorum.status == etcd.status, (etcd.body, quorum.body)
    assert quorum.headers["content-type"] == etcd.headers["content-type"]
    if etcd.headers["content-type"] == "application/json":
        want, have = etcd.json(), quorum.json()
        assert have["code"] == want["code"]
        assert have["error"] == have["message"]
        assert have == want
    else:
        assert quorum.body == etcd.body


def test_garbage_and_oversized_input_leave_the_node_serving(quorum: NodeProcess) -> None:
    garbage = [
        b"garbage garbage\r\n\r\n",
        b"\x00\x01\x02\x03\xff\xfe\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        b"GET /health HTTP/1.1\r\n" + b"X-Big: " + b"a" * 100_000 + b"\r\n\r\n",
        b"POST /v3/kv/put HTTP/1.1\r\nContent-Length: 999999999\r\n\r\n{",
        b"POST /v3/kv/put HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"POST /v3/kv/put HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
    ]
    statuses = [status_of(raw_exchange(quorum.endpoint, data)) for data in garbage]
    assert statuses == [400, 400, 505, 431, 413, 400, 400]
    with RawKV(quorum.endpoint) as kv:
        kv.put(b"after-garbage", b"ok")
    assert get(quorum.endpoint, "/health").status == 200
