"""A tiny etcd KV client speaking the protobuf wire format by hand, for tests and probes.

Tests that compare Quorum with real etcd must not depend on Quorum's own generated code or client (they
would share its bugs), so this module encodes the handful of fields it needs itself and calls the gRPC
methods with raw bytes. It covers Put, Range, a Txn of puts, Maintenance.Status and calling any method
with any bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from cluster.api.keys import prefix_end


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field_bytes(number: int, data: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _field_varint(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def parse_fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """Decode one message level into (field number, varint value or length-delimited bytes)."""
    fields: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(buf):
        tag, pos = _read_varint(buf, pos)
        number, wire_type = tag >> 3, tag & 7
        if wire_type == 0:
            value, pos = _read_varint(buf, pos)
            fields.append((number, value))
        elif wire_type == 2:
            length, pos = _read_varint(buf, pos)
            fields.append((number, buf[pos : pos + length]))
            pos += length
        elif wire_type == 1:
            fields.append((number, int.from_bytes(buf[pos : pos + 8], "little")))
            pos += 8
        elif wire_type == 5:
            fields.append((number, int.from_bytes(buf[pos : pos + 4], "little")))
            pos += 4
        else:
            raise ValueError(f"unsupported wire type {wire_type}")
    return fields


@dataclass(frozen=True, slots=True)
class Header:
    cluster_id: int = 0
    member_id: int = 0
    revision: int = 0
    raft_term: int = 0


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: bytes
    value: bytes
    create_revision: int = 0
    mod_revision: int = 0
    version: int = 0
    lease: int = 0


@dataclass(frozen=True, slots=True)
class MemberStatus:
    """The parts of a Maintenance.Status answer that say who leads: a member answers it locally."""

    member_id: int
    leader: int
    raft_term: int

    @property
    def is_leader(self) -> bool:
        return self.leader != 0 and self.leader == self.member_id


def _int_fields(buf: bytes) -> dict[int, int]:
    return {n: v for n, v in parse_fields(buf) if isinstance(v, int)}


def decode_header(response: bytes) -> Header:
    """The ResponseHeader (field 1) of any etcd response."""
    for number, value in parse_fields(response):
        if number == 1 and isinstance(value, bytes):
            ints = _int_fields(value)
            return Header(ints.get(1, 0), ints.get(2, 0), ints.get(3, 0), ints.get(4, 0))
    return Header()


def decode_key_value(buf: bytes) -> KeyValue:
    key = value = b""
    ints: dict[int, int] = {}
    for number, raw in parse_fields(buf):
        if number == 1 and isinstance(raw, bytes):
            key = raw
        elif number == 5 and isinstance(raw, bytes):
            value = raw
        elif isinstance(raw, int):
            ints[number] = raw
    return KeyValue(key, value, ints.get(2, 0), ints.get(3, 0), ints.get(4, 0), ints.get(6, 0))


def encode_put(key: bytes, value: bytes, lease: int = 0, prev_kv: bool = False) -> bytes:
    out = _field_bytes(1, key) + _field_bytes(2, value)
    if lease:
        out += _field_varint(3, lease)
    if prev_kv:
        out += _field_varint(4, 1)
    return out


def encode_range(
    key: bytes, range_end: bytes = b"", revision: int = 0, serializable: bool = False, limit: int = 0
) -> bytes:
    out = _field_bytes(1, key)
    if range_end:
        out += _field_bytes(2, range_end)
    if limit:
        out += _field_varint(3, limit)
    if revision:
        out += _field_varint(4, revision)
    if serializable:
        out += _field_varint(7, 1)
    return out


def encode_txn_puts(puts: list[tuple[bytes, bytes]]) -> bytes:
    """A TxnRequest with no compares whose success branch is one RequestOp{request_put} per pair."""
    return b"".join(_field_bytes(2, _field_bytes(2, encode_put(k, v))) for k, v in puts)




class RawKV:
    """Blocking KV calls over one insecure gRPC channel; thread-safe like the channel itself."""

    def __init__(self, endpoint: str, max_message_bytes: int = 64 * 1024 * 1024) -> None:
        self.endpoint = endpoint
        self.channel = grpc.insecure_channel(
            endpoint,
            options=[
                ("grpc.max_send_message_length", max_message_bytes),
                ("grpc.max_receive_message_length", max_message_bytes),
                # A private subchannel: a channel opened after a restart must not inherit the
                # reconnect backoff of another channel to the same address that saw the node die.
                ("grpc.use_local_subchannel_pool", 1),
            ],
        )

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> RawKV:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, method: str, payload: bytes, timeout: float = 5.0) -> bytes:
        """Call ``method`` (e.g. "/etcdserverpb.KV/Put") with raw request bytes; raw response bytes."""
        stub = self.channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        result: bytes = stub(payload, timeout=timeout)
        return result

    def put(self, key: bytes, value: bytes, timeout: float = 5.0) -> Header:
        return decode_header(self.call("/etcdserverpb.KV/Put", encode_put(key, value), timeout))

    def txn_puts(self, puts: list[tuple[bytes, bytes]], timeout: float = 5.0) -> Header:
        return decode_header(self.call("/etcdserverpb.KV/Txn", encode_txn_puts(puts), timeout))

    def status(self, timeout: float = 5.0) -> MemberStatus:
        raw = self.call("/etcdserverpb.Maintenance/Status", b"", timeout)
        ints = _int_fields(raw)  # StatusResponse: leader = 4, raftTerm = 6
        return MemberStatus(decode_header(raw).member_id, ints.get(4, 0), ints.get(6, 0))

    def range(
        self,
        key: bytes,
        range_end: bytes = b"",
        revision: int = 0,
        serializable: bool = False,
        timeout: float = 5.0,
    ) -> tuple[Header, list[KeyValue]]:
        raw = self.call(
            "/etcdserverpb.KV/Range", encode_range(key, range_end, revision, serializable), timeout
        )
        kvs = [decode_key_value(v) for n, v in parse_fields(raw) if n == 2 and isinstance(v, bytes)]
        return decode_header(raw), kvs

    def get(self, key: bytes, timeout: float = 5.0) -> KeyValue | None:
        _, kvs = self.range(key, timeout=timeout)
        return kvs[0] if kvs else None

    def get_prefix(self, prefix: bytes, timeout: float = 10.0) -> list[KeyValue]:
        key = prefix or b"\x00"  # the empty prefix means every key, as etcdctl sends it
        _, kvs = self.range(key, prefix_end(prefix), timeout=timeout)
        return kvs
