"""etcdctl's output formats: simple, json, fields, protobuf and table, byte for byte.

Each printer renders one response to bytes on stdout (endpoint health in the simple format
writes to stderr, as etcdctl does). A format that etcdctl does not support for a response
raises `CtlExit` with etcdctl's ``<format> not supported as output format``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, BinaryIO

from cluster.api.gen.etcdserverpb import rpc_pb2
from cluster.api.gen.mvccpb import kv_pb2
from cluster.ctl.exits import EXIT_BAD_FEATURE, CtlExit, GoPanic
from cluster.ctl.goformat import go_quote, humanize_bytes, json_string, message_json
from cluster.ctl.table import render_table

FORMATS = ("simple", "json", "protobuf", "fields", "table")


@dataclass(frozen=True, slots=True)
class EndpointHealth:
    endpoint: str
    health: bool
    took: str
    error: str = ""


@dataclass(frozen=True, slots=True)
class EndpointStatus:
    endpoint: str
    response: rpc_pb2.StatusResponse


@dataclass(frozen=True, slots=True)
class EndpointHashKV:
    endpoint: str
    response: rpc_pb2.HashKVResponse


@dataclass(frozen=True, slots=True)
class SnapshotStatus:
    """What ``snapshot status`` reports about a snapshot file (etcd's snapshot.Status)."""

    hash: int
    revision: int
    total_key: int
    total_size: int

    def row(self) -> list[str]:
        return [f"{self.hash:x}", str(self.revision), str(self.total_key), humanize_bytes(self.total_size)]


def _hex_bytes(data: bytes) -> bytes:
    return "".join(f"\\x{b:02x}" for b in data).encode()


class Printer:
    """Base printer: every response is unsupported until a format says otherwise."""

    name = "printer"

    def __init__(self, out: BinaryIO | None = None, err: BinaryIO | None = None) -> None:
        self.out = out if out is not None else sys.stdout.buffer
        self.err = err if err is not None else sys.stderr.buffer

    def write(self, data: bytes | str) -> None:
        self.out.write(data.encode() if isinstance(data, str) else data)

    def unsupported(self) -> CtlExit:
        return CtlExit(EXIT_BAD_FEATURE, f"{self.name} not supported as output format")

    def get(self, resp: rpc_pb2.RangeResponse) -> None:
        raise self.unsupported()

    def put(self, resp: rpc_pb2.PutResponse) -> None:
        raise self.unsupported()

    def delete(self, resp: rpc_pb2.DeleteRangeResponse) -> None:
        raise self.unsupported()

    def txn(self, resp: rpc_pb2.TxnResponse) -> None:
        raise self.unsupported()

    def alarm(self, resp: rpc_pb2.AlarmResponse) -> None:
        raise self.unsupported()

    def member_list(self, resp: rpc_pb2.MemberListResponse) -> None:
        raise self.unsupported()

    def endpoint_health(self, items: list[EndpointHealth]) -> None:
        raise self.unsupported()

    def endpoint_status(self, items: list[EndpointStatus]) -> None:
        raise self.unsupported()

    def endpoint_hashkv(self, items: list[EndpointHashKV]) -> None:
        raise self.unsupported()

    def db_status(self, ds: SnapshotStatus) -> None:
        raise self.unsupported()


class RPCPrinter(Printer):
    """Formats that print whole RPC responses one way (json, protobuf)."""

    def response(self, message: object) -> None:
        raise NotImplementedError

    def get(self, resp: rpc_pb2.RangeResponse) -> None:
        self.response(resp)

    def put(self, resp: rpc_pb2.PutResponse) -> None:
        self.response(resp)

    def delete(self, resp: rpc_pb2.DeleteRangeResponse) -> None:
        self.response(resp)

    def txn(self, resp: rpc_pb2.TxnResponse) -> None:
        self.response(resp)

    def alarm(self, resp: rpc_pb2.AlarmResponse) -> None:
        self.response(resp)

    def member_list(self, resp: rpc_pb2.MemberListResponse) -> None:
        self.response(resp)


class SimplePrinter(Printer):
    name = "simple"

    def __init__(
        self, is_hex: bool = False, out: BinaryIO | None = None, err: BinaryIO | None = None
    ) -> None:
        super().__init__(out, err)
        self.is_hex = is_hex
        self.value_only = False

    def kv(self, kv: kv_pb2.KeyValue) -> None:
        key, value = kv.key, kv.value
        if self.is_hex:
            key, value = _hex_bytes(key), _hex_bytes(value)
        if not self.value_only:
            self.write(key + b"\n")
        self.write(value + b"\n")

    def get(self, resp: rpc_pb2.RangeResponse) -> None:
        for kv in resp.kvs:
            self.kv(kv)

    def put(self, resp: rpc_pb2.PutResponse) -> None:
        self.write("OK\n")
        if resp.HasField("prev_kv"):
            self.kv(resp.prev_kv)

    def delete(self, resp: rpc_pb2.DeleteRangeResponse) -> None:
        self.write(f"{resp.deleted}\n")
        for kv in resp.prev_kvs:
            self.kv(kv)

    def txn(self, resp: rpc_pb2.TxnResponse) -> None:
        self.write("SUCCESS\n" if resp.succeeded else "FAILURE\n")
        for op in resp.responses:
            self.write("\n")
            kind = op.WhichOneof("response")
            if kind == "response_range":
                self.get(op.response_range)
            elif kind == "response_put":
                self.put(op.response_put)
            elif kind == "response_delete_range":
                self.delete(op.response_delete_range)
            else:
                self.write(f"unexpected response {op}\n")

    def alarm(self, resp: rpc_pb2.AlarmResponse) -> None:
        for member in resp.alarms:
            self.write(alarm_compact_text(member) + "\n")

    def member_list(self, resp: rpc_pb2.MemberListResponse) -> None:
        for row in member_rows(resp):
            self.write(", ".join(row) + "\n")

    def endpoint_health(self, items: list[EndpointHealth]) -> None:
        for item in items:
            if item.error:
                line = f"{item.endpoint} is unhealthy: failed to commit proposal: {item.error}\n"
            else:
                line = f"{item.endpoint} is healthy: successfully committed proposal: took = {item.took}\n"
            self.err.write(line.encode())

    def endpoint_status(self, items: list[EndpointStatus]) -> None:
        for row in status_rows(items):
            self.write(", ".join(row) + "\n")

    def endpoint_hashkv(self, items: list[EndpointHashKV]) -> None:
        for item in items:
            self.write(f"{item.endpoint}, {item.response.hash}\n")

    def db_status(self, ds: SnapshotStatus) -> None:
        self.write(", ".join(ds.row()) + "\n")


class JSONPrinter(RPCPrinter):
    name = "json"

    def response(self, message: object) -> None:
        self.write(message_json(message) + "\n")  # type: ignore[arg-type]

    def endpoint_health(self, items: list[EndpointHealth]) -> None:
        parts = []
        for item in items:
            fields = [
                f'"endpoint":{json_string(item.endpoint)}',
                f'"health":{"true" if item.health else "false"}',
                f'"took":{json_string(item.took)}',
            ]
            if item.error:
                fields.append(f'"error":{json_string(item.error)}')
            parts.append("{" + ",".join(fields) + "}")
        self.write("[" + ",".join(parts) + "]\n")

    def endpoint_status(self, items: list[EndpointStatus]) -> None:
        parts = [
            f'{{"Endpoint":{json_string(i.endpoint)},"Status":{message_json(i.response)}}}' for i in items
        ]
        self.write("[" + ",".join(parts) + "]\n")

    def endpoint_hashkv(self, items: list[EndpointHashKV]) -> None:
        parts = [
            f'{{"Endpoint":{json_string(i.endpoint)},"HashKV":{message_json(i.response)}}}' for i in items
        ]
        self.write("[" + ",".join(parts) + "]\n")


    def db_status(self, ds: SnapshotStatus) -> None:
        self.write(f'{{"hash":{ds.hash},"revision":{ds.revision},"totalKey":{ds.total_key},'
                   f'"totalSize":{ds.total_size}}}\n')


class ProtobufPrinter(RPCPrinter):
    name = "protobuf"

    def response(self, message: object) -> None:
        self.write(message.SerializeToString())  # type: ignore[attr-defined]


class FieldsPrinter(Printer):
    name = "fields"

    def line(self, text: str) -> None:
        self.write(text + "\n")

    def header(self, response: Any) -> None:
        """The header lines; a response without a header makes etcdctl dereference nil and panic."""
        if not response.HasField("header"):
            raise GoPanic("runtime error: invalid memory address or nil pointer dereference")
        h = response.header
        self.line(f'"ClusterID" : {h.cluster_id}')
        self.line(f'"MemberID" : {h.member_id}')
        self.line(f'"Revision" : {h.revision}')
        self.line(f'"RaftTerm" : {h.raft_term}')

    def kv(self, prefix: str, kv: kv_pb2.KeyValue) -> None:
        self.line(f'"{prefix}Key" : {go_quote(kv.key)}')
        self.line(f'"{prefix}CreateRevision" : {kv.create_revision}')
        self.line(f'"{prefix}ModRevision" : {kv.mod_revision}')
        self.line(f'"{prefix}Version" : {kv.version}')
        self.line(f'"{prefix}Value" : {go_quote(kv.value)}')
        self.line(f'"{prefix}Lease" : {kv.lease}')

    def get(self, resp: rpc_pb2.RangeResponse) -> None:
        self.header(resp)
        for kv in resp.kvs:
            self.kv("", kv)
        self.line(f'"More" : {_go_bool(resp.more)}')
        self.line(f'"Count" : {resp.count}')

    def put(self, resp: rpc_pb2.PutResponse) -> None:
        self.header(resp)
        if resp.HasField("prev_kv"):
            self.kv("Prev", resp.prev_kv)

    def delete(self, resp: rpc_pb2.DeleteRangeResponse) -> None:
        self.header(resp)
        self.line(f'"Deleted" : {resp.deleted}')
        for kv in resp.prev_kvs:
            self.kv("Prev", kv)

    def txn(self, resp: rpc_pb2.TxnResponse) -> None:
        self.header(resp)
        self.line(f'"Succeeded" : {_go_bool(resp.succeeded)}')
        for op in resp.responses:
            kind = op.WhichOneof("response")
            if kind == "response_range":
                self.get(op.response_range)
            elif kind == "response_put":
                self.put(op.response_put)
            elif kind == "response_delete_range":
                self.delete(op.response_delete_range)

    def alarm(self, resp: rpc_pb2.AlarmResponse) -> None:
        self.header(resp)
        for member in resp.alarms:
            self.line(f'"MemberID" : {member.memberID}')
            self.line(f'"AlarmType" : {rpc_pb2.AlarmType.Name(member.alarm)}')
            self.line("")

    def member_list(self, resp: rpc_pb2.MemberListResponse) -> None:
        self.header(resp)
        for m in resp.members:
            self.line(f'"ID" : {m.ID}')
            self.line(f'"Name" : {go_quote(m.name)}')
            for url in m.peerURLs:
                self.line(f'"PeerURL" : {go_quote(url)}')
            for url in m.clientURLs:
                self.line(f'"ClientURL" : {go_quote(url)}')
            self.line(f'"IsLearner" : {_go_bool(m.isLearner)}')
            self.line("")

    def endpoint_health(self, items: list[EndpointHealth]) -> None:
        for item in items:
            self.line(f'"Endpoint" : {go_quote(item.endpoint)}')
            self.line(f'"Health" : {_go_bool(item.health)}')
            self.line(f'"Took" : {item.took}')
            self.line(f'"Error" : {item.error}')
            self.line("")

    def endpoint_status(self, items: list[EndpointStatus]) -> None:
        for item in items:
            r = item.response
            self.header(r)
            self.line(f'"Version" : {go_quote(r.version)}')
            self.line(f'"DBSize" : {r.dbSize}')
            self.line(f'"Leader" : {r.leader}')
            self.line(f'"IsLearner" : {_go_bool(r.isLearner)}')
            self.line(f'"RaftIndex" : {r.raftIndex}')
            self.line(f'"RaftTerm" : {r.raftTerm}')
            self.line(f'"RaftAppliedIndex" : {r.raftAppliedIndex}')
            self.line(f'"Errors" : [{" ".join(r.errors)}]')
            self.line(f'"Endpoint" : {go_quote(item.endpoint)}')
            self.line("")

    def endpoint_hashkv(self, items: list[EndpointHashKV]) -> None:
        for item in items:
            self.header(item.response)
            self.line(f'"Endpoint" : {go_quote(item.endpoint)}')
            self.line(f'"Hash" : {item.response.hash}')
            self.line("")

    def db_status(self, ds: SnapshotStatus) -> None:
        self.line(f'"Hash" : {ds.hash}')
        self.line(f'"Revision" : {ds.revision}')
        self.line(f'"Keys" : {ds.total_key}')
        self.line(f'"Size" : {ds.total_size}')


class TablePrinter(Printer):
    name = "table"

    def member_list(self, resp: rpc_pb2.MemberListResponse) -> None:
        header = ["ID", "Status", "Name", "Peer Addrs", "Client Addrs", "Is Learner"]
        self.write(render_table(header, member_rows(resp)))

    def endpoint_health(self, items: list[EndpointHealth]) -> None:
        rows = [[i.endpoint, _go_bool(i.health), i.took, i.error] for i in items]
        self.write(render_table(["endpoint", "health", "took", "error"], rows))

    def endpoint_status(self, items: list[EndpointStatus]) -> None:
        header = [
            "endpoint",
            "ID",
            "version",
            "db size",
            "is leader",
            "is learner",
            "raft term",
            "raft index",
            "raft applied index",
            "errors",
        ]
        self.write(render_table(header, status_rows(items)))

    def endpoint_hashkv(self, items: list[EndpointHashKV]) -> None:
        rows = [[i.endpoint, str(i.response.hash)] for i in items]
        self.write(render_table(["endpoint", "hash"], rows))

    def db_status(self, ds: SnapshotStatus) -> None:
        self.write(render_table(["hash", "revision", "total keys", "total size"], [ds.row()]))


def _go_bool(value: bool) -> str:
    return "true" if value else "false"


def alarm_compact_text(member: rpc_pb2.AlarmMember) -> str:
    """gogoproto's ``String()`` of an AlarmMember (compact text, trailing space included)."""
    text = ""
    if member.memberID:
        text += f"memberID:{member.memberID} "
    if member.alarm:
        text += f"alarm:{rpc_pb2.AlarmType.Name(member.alarm)} "
    return text


def member_rows(resp: rpc_pb2.MemberListResponse) -> list[list[str]]:
    return [
        [
            f"{m.ID:x}",
            "started" if m.name else "unstarted",
            m.name,
            ",".join(m.peerURLs),
            ",".join(m.clientURLs),
            _go_bool(m.isLearner),
        ]
        for m in resp.members
    ]


def status_rows(items: list[EndpointStatus]) -> list[list[str]]:
    return [
        [
            i.endpoint,
            f"{i.response.header.member_id:x}",
            i.response.version,
            humanize_bytes(i.response.dbSize),
            _go_bool(i.response.leader == i.response.header.member_id),
            _go_bool(i.response.isLearner),
            str(i.response.raftTerm),
            str(i.response.raftIndex),
            str(i.response.raftAppliedIndex),
            ", ".join(i.response.errors),
        ]
        for i in items
    ]


def new_printer(fmt: str, is_hex: bool) -> Printer | None:
    """The printer for ``-w fmt``, or None for an unknown format."""
    if fmt == "simple":
        return SimplePrinter(is_hex)
    classes: dict[str, type[Printer]] = {
        "json": JSONPrinter,
        "protobuf": ProtobufPrinter,
        "fields": FieldsPrinter,
        "table": TablePrinter,
    }
    cls = classes.get(fmt)
    return cls() if cls is not None else None
