"""quorumctl's printers render responses exactly as etcdctl 3.4 does."""

from __future__ import annotations

import io

import pytest

from cluster.api.gen.etcdserverpb import rpc_pb2
from cluster.api.gen.mvccpb import kv_pb2
from cluster.ctl.exits import CtlExit
from cluster.ctl.goformat import go_quote, humanize_bytes, message_json
from cluster.ctl.printers import (
    EndpointHealth,
    EndpointStatus,
    FieldsPrinter,
    JSONPrinter,
    SimplePrinter,
    TablePrinter,
    alarm_compact_text,
)
from cluster.ctl.table import render_table

HEADER = rpc_pb2.ResponseHeader(
    cluster_id=7801232528081817440, member_id=13458989633860879742, revision=4, raft_term=2
)
KV = kv_pb2.KeyValue(key=b"foo", create_revision=2, mod_revision=4, version=3, value=b"baz")


def _render(printer_cls: type, method: str, *args: object, **kwargs: object) -> bytes:
    out, err = io.BytesIO(), io.BytesIO()
    printer = printer_cls(out=out, err=err, **kwargs)
    getattr(printer, method)(*args)
    return out.getvalue() + err.getvalue()


def test_json_uses_proto_names_omits_zero_values_and_base64s_bytes() -> None:
    response = rpc_pb2.RangeResponse(header=HEADER, kvs=[KV], count=1)
    assert message_json(response) == (
        '{"header":{"cluster_id":7801232528081817440,"member_id":13458989633860879742,"revision":4,'
        '"raft_term":2},"kvs":[{"key":"Zm9v","create_revision":2,"mod_revision":4,"version":3,'
        '"value":"YmF6"}],"count":1}'
    )


def test_json_renders_oneofs_as_go_interface_fields() -> None:
    txn = rpc_pb2.TxnResponse(
        header=HEADER,
        succeeded=True,
        responses=[
            rpc_pb2.ResponseOp(response_put=rpc_pb2.PutResponse(header=rpc_pb2.ResponseHeader(revision=10)))
        ],
    )
    assert message_json(txn).endswith(
        '"succeeded":true,"responses":[{"Response":{"ResponsePut":{"header":{"revision":10}}}}]}'
    )


def test_simple_put_prints_ok_then_previous_pair() -> None:
    assert _render(SimplePrinter, "put", rpc_pb2.PutResponse(header=HEADER, prev_kv=KV)) == b"OK\nfoo\nbaz\n"


def test_simple_hex_escapes_every_byte() -> None:
    out = _render(SimplePrinter, "get", rpc_pb2.RangeResponse(kvs=[KV]), is_hex=True)
    assert out == b"\\x66\\x6f\\x6f\n\\x62\\x61\\x7a\n"


def test_simple_txn_separates_responses_with_blank_lines() -> None:
    txn = rpc_pb2.TxnResponse(
        succeeded=False,
        responses=[
            rpc_pb2.ResponseOp(response_delete_range=rpc_pb2.DeleteRangeResponse(deleted=2)),
            rpc_pb2.ResponseOp(response_range=rpc_pb2.RangeResponse(kvs=[KV])),
        ],
    )
    assert _render(SimplePrinter, "txn", txn) == b"FAILURE\n\n2\n\nfoo\nbaz\n"


def test_fields_quote_like_go() -> None:
    out = _render(FieldsPrinter, "put", rpc_pb2.PutResponse(header=HEADER, prev_kv=KV)).decode()
    assert out.splitlines()[:5] == [
        '"ClusterID" : 7801232528081817440',
        '"MemberID" : 13458989633860879742',
        '"Revision" : 4',
        '"RaftTerm" : 2',
        '"PrevKey" : "foo"',
    ]
    assert go_quote(b'a"\n\x01\xff\xc3\xa9') == '"a\\"\\n\\x01\\xff\u00e9"'


def test_unsupported_format_exits_with_bad_feature() -> None:
    with pytest.raises(CtlExit) as err:
        _render(TablePrinter, "get", rpc_pb2.RangeResponse())
    assert (err.value.code, err.value.message) == (4, "table not supported as output format")


def test_health_goes_to_stderr_in_simple_format() -> None:
    out, err = io.BytesIO(), io.BytesIO()
    SimplePrinter(out=out, err=err).endpoint_health([EndpointHealth("127.0.0.1:2379", True, "1.2ms")])
    assert out.getvalue() == b""
    assert err.getvalue() == b"127.0.0.1:2379 is healthy: successfully committed proposal: took = 1.2ms\n"


def test_status_json_wraps_each_endpoint() -> None:
    status = rpc_pb2.StatusResponse(header=HEADER, version="3.4.23", dbSize=28672, leader=5, raftIndex=7)
    out = _render(JSONPrinter, "endpoint_status", [EndpointStatus("e:1", status)]).decode()
    assert out.startswith('[{"Endpoint":"e:1","Status":{"header":') and '"dbSize":28672' in out


def test_table_layout_matches_tablewriter() -> None:
    assert render_table(["endpoint", "health"], [["127.0.0.1:2379", "true"]]) == (
        "+----------------+--------+\n"
        "|    ENDPOINT    | HEALTH |\n"
        "+----------------+--------+\n"
        "| 127.0.0.1:2379 |   true |\n"
        "+----------------+--------+\n"
    )


def test_long_cells_wrap_at_thirty_columns() -> None:
    table = render_table(["error"], [["context deadline exceeded and a lot more words"]])
    assert "|  context deadline exceeded and |\n|               a lot more words |" in table


@pytest.mark.parametrize(
    ("size", "text"), [(5, "5 B"), (28672, "29 kB"), (1234567, "1.2 MB"), (99999, "100 kB")]
)
def test_sizes_are_humanized_like_go_humanize(size: int, text: str) -> None:
    assert humanize_bytes(size) == text


def test_alarm_simple_text_is_gogoproto_compact_text() -> None:
    member = rpc_pb2.AlarmMember(memberID=42, alarm=rpc_pb2.NOSPACE)
    assert alarm_compact_text(member) == "memberID:42 alarm:NOSPACE "


def test_lease_grant_json_flattens_the_embedded_header_like_clientv3() -> None:
    from cluster.ctl.lease_output import print_grant

    out = io.BytesIO()
    response = rpc_pb2.LeaseGrantResponse(header=rpc_pb2.ResponseHeader(revision=3), ID=255, TTL=60)
    print_grant(JSONPrinter(out=out), response)
    assert out.getvalue() == b'{"revision":3,"ID":255,"TTL":60,"Error":""}\n'
    out = io.BytesIO()
    print_grant(SimplePrinter(out=out), response)
    assert out.getvalue() == b"lease 00000000000000ff granted with TTL(60s)\n"


def test_expired_lease_time_to_live() -> None:
    from cluster.ctl.lease_output import print_time_to_live

    response = rpc_pb2.LeaseTimeToLiveResponse(header=rpc_pb2.ResponseHeader(revision=3), ID=16, TTL=-1)
    out = io.BytesIO()
    print_time_to_live(SimplePrinter(out=out), response, keys=False)
    assert out.getvalue() == b"lease 0000000000000010 already expired\n"
    out = io.BytesIO()
    print_time_to_live(JSONPrinter(out=out), response, keys=True)
    assert out.getvalue() == b'{"revision":3,"id":16,"ttl":-1,"granted-ttl":0,"keys":null}\n'
