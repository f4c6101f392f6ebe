"""How etcdctl prints lease responses in each output format.

etcdctl wraps most lease responses in clientv3 structs that embed ``*pb.ResponseHeader``, so
their JSON has the header's fields at top level next to ``ID``/``TTL`` (Go field names, no
omitempty), and their ``-w protobuf`` output is the header alone (the only marshaller they
inherit). Revoke is printed as the plain protobuf response, which protobuf cannot marshal.
"""

from __future__ import annotations

import base64

from cluster.api.gen.etcdserverpb import rpc_pb2
from cluster.ctl.exits import EXIT_BAD_FEATURE, CtlExit
from cluster.ctl.goformat import go_quote, json_string, message_json
from cluster.ctl.printers import FieldsPrinter, Printer


def _header_members(header: rpc_pb2.ResponseHeader, present: bool) -> list[str]:
    if not present:
        return []
    body = message_json(header)[1:-1]
    return [body] if body else []


def _json_object(members: list[str]) -> str:
    return "{" + ",".join(members) + "}\n"


def _fields_or_protobuf(printer: Printer, response: object, lines: list[str]) -> bool:
    """Handle the fields and protobuf formats; True when done."""
    if isinstance(printer, FieldsPrinter):
        printer.header(response)
        for line in lines:
            printer.line(line)
        return True
    if printer.name == "protobuf":
        printer.write(response.header.SerializeToString())  # type: ignore[attr-defined]
        return True
    return False


def print_grant(printer: Printer, resp: rpc_pb2.LeaseGrantResponse) -> None:
    if printer.name == "simple":
        printer.write(f"lease {resp.ID:016x} granted with TTL({resp.TTL}s)\n")
    elif printer.name == "json":
        members = _header_members(resp.header, resp.HasField("header"))
        members += [f'"ID":{resp.ID}', f'"TTL":{resp.TTL}', f'"Error":{json_string(resp.error)}']
        printer.write(_json_object(members))
    elif not _fields_or_protobuf(printer, resp, [f'"ID" : {resp.ID}', f'"TTL" : {resp.TTL}']):
        raise printer.unsupported()


def print_keep_alive(printer: Printer, resp: rpc_pb2.LeaseKeepAliveResponse) -> None:
    if printer.name == "simple":
        printer.write(f"lease {resp.ID:016x} keepalived with TTL({resp.TTL})\n")
    elif printer.name == "json":
        members = _header_members(resp.header, resp.HasField("header"))
        printer.write(_json_object([*members, f'"ID":{resp.ID}', f'"TTL":{resp.TTL}']))
    elif not _fields_or_protobuf(printer, resp, [f'"ID" : {resp.ID}', f'"TTL" : {resp.TTL}']):
        raise printer.unsupported()


def print_revoke(printer: Printer, lease_id: int, resp: rpc_pb2.LeaseRevokeResponse) -> None:
    if printer.name == "simple":
        printer.write(f"lease {lease_id:016x} revoked\n")
    elif printer.name == "json":
        printer.write(message_json(resp) + "\n")
    elif isinstance(printer, FieldsPrinter):
        printer.header(resp)
    elif printer.name == "protobuf":
        raise CtlExit(EXIT_BAD_FEATURE, "marshal unsupported for type clientv3.LeaseRevokeResponse")
    else:
        raise printer.unsupported()


def print_time_to_live(printer: Printer, resp: rpc_pb2.LeaseTimeToLiveResponse, keys: bool) -> None:
    if printer.name == "simple":
        if resp.grantedTTL == 0 and resp.TTL == -1:
            printer.write(f"lease {resp.ID:016x} already expired\n")
            return
        text = f"lease {resp.ID:016x} granted with TTL({resp.grantedTTL}s), remaining({resp.TTL}s)"
        if keys:
            names = " ".join(k.decode("utf-8", "surrogateescape") for k in resp.keys)
            text += f", attached keys([{names}])"
        printer.write(text.encode("utf-8", "surrogateescape") + b"\n")
    elif printer.name == "json":
        members = _header_members(resp.header, resp.HasField("header"))
        key_list = "[" + ",".join(json_string(base64.b64encode(k).decode()) for k in resp.keys) + "]"
        members += [
            f'"id":{resp.ID}',
            f'"ttl":{resp.TTL}',
            f'"granted-ttl":{resp.grantedTTL}',
            f'"keys":{key_list if resp.keys else "null"}',
        ]
        printer.write(_json_object(members))
    else:
        lines = [f'"ID" : {resp.ID}', f'"TTL" : {resp.TTL}', f'"GrantedTTL" : {resp.grantedTTL}']
        lines += [f'"Key" : {go_quote(k)}' for k in resp.keys]
        if not _fields_or_protobuf(printer, resp, lines):
            raise printer.unsupported()


def print_leases(printer: Printer, resp: rpc_pb2.LeaseLeasesResponse) -> None:
    if printer.name == "simple":
        printer.write(f"found {len(resp.leases)} leases\n")
        for lease in resp.leases:
            printer.write(f"{lease.ID:016x}\n")
    elif printer.name == "json":
        members = _header_members(resp.header, resp.HasField("header"))
        leases = "[" + ",".join(f'{{"id":{lease.ID}}}' for lease in resp.leases) + "]"
        printer.write(_json_object([*members, f'"leases":{leases}']))
    elif not _fields_or_protobuf(printer, resp, [f'"ID" : {lease.ID}' for lease in resp.leases]):
        raise printer.unsupported()
