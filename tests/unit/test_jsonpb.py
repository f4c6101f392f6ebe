"""grpc-gateway's JSON in Python: output identical to json_format's jsonpb mapping, Go's strictness on
input (padded standard base64) and Go's wording of syntax errors."""

from __future__ import annotations

import pytest
from google.protobuf import json_format
from google.protobuf.message import Message

from cluster.api.gen.etcdserverpb import rpc_pb2
from cluster.api.gen.mvccpb import kv_pb2
from cluster.services.jsonpb import GatewayError, first_value, parse_request, to_json


def _messages() -> list[Message]:
    rng = rpc_pb2.RangeResponse(count=1, more=True)
    rng.header.cluster_id = 2**63 + 5
    rng.header.revision = 7
    rng.kvs.add(key=b"foo", value=b"\x00\xff", create_revision=2, mod_revision=3, version=1, lease=9)
    watch = rpc_pb2.WatchResponse(created=True, watch_id=0, compact_revision=4)
    watch.events.add(type=kv_pb2.Event.DELETE, kv=kv_pb2.KeyValue(key=b"k", mod_revision=3))
    txn = rpc_pb2.TxnResponse(succeeded=True)
    txn.responses.add().response_range.CopyFrom(rng)
    status = rpc_pb2.StatusResponse(version="3.4.23", dbSize=10, errors=["e"], isLearner=True)
    return [rng, watch, txn, status, rpc_pb2.HashResponse(hash=2**32 - 1), rpc_pb2.RangeResponse()]


@pytest.mark.parametrize("message", _messages(), ids=lambda m: type(m).__name__)
def test_to_json_is_jsonpb_with_proto_names(message: Message) -> None:
    expected = json_format.MessageToDict(message, preserving_proto_field_name=True)
    got = to_json(message)
    assert got == expected and list(got) == list(expected)


def test_requests_take_proto_or_camel_names_strings_or_numbers_and_enum_names() -> None:
    req = parse_request(
        {"key": "Zm9v", "range_end": "Zm9w", "limit": "3", "sortOrder": 2, "sort_target": "VALUE", "x": 1},
        rpc_pb2.RangeRequest,
    )
    assert req == rpc_pb2.RangeRequest(
        key=b"foo", range_end=b"fop", limit=3, sort_order=rpc_pb2.RangeRequest.DESCEND,
        sort_target=rpc_pb2.RangeRequest.VALUE,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("text", "position"), [("!!!", 0), ("Zm9", 0), ("Zm9vYg", 4), ("Zm9v_w==", 4), ("Zm=v", 2)]
)
def test_bytes_need_padded_standard_base64_as_in_go(text: str, position: int) -> None:
    with pytest.raises(GatewayError) as info:
        parse_request({"compare": [{"key": text}]}, rpc_pb2.TxnRequest)
    assert info.value.message == f"illegal base64 data at input byte {position}"


def test_syntax_errors_are_worded_as_go_words_them() -> None:
    with pytest.raises(GatewayError) as info:
        first_value('{"key":"Zm9v" "x"}')
    assert info.value.message == "invalid character '\"' after object key:value pair"
    assert first_value("  \n") is None
