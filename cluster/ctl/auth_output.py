"""How etcdctl prints auth, user and role responses.

Simple output is a sentence per command (``Role r created``); json and protobuf print the RPC
response; fields prints the header (plus permissions and role names where etcdctl does), and
has no rendering for ``user get``/``user list``.
"""

from __future__ import annotations

from typing import Any

from cluster.api.gen.authpb import auth_pb2
from cluster.ctl.goformat import go_quote, message_json
from cluster.ctl.kv_commands import prefix_end
from cluster.ctl.printers import FieldsPrinter, Printer


def _text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def print_auth(printer: Printer, resp: Any, simple_text: str, fields: bool = True) -> None:
    """A response whose simple form is one fixed sentence and whose fields form is the header."""
    if printer.name == "simple":
        printer.write(simple_text.encode("utf-8", "surrogateescape"))
    elif printer.name == "json":
        printer.write(message_json(resp) + "\n")
    elif printer.name == "protobuf":
        printer.write(resp.SerializeToString())
    elif isinstance(printer, FieldsPrinter) and fields:
        printer.header(resp)
    else:
        raise printer.unsupported()


def _perm_line(perm: auth_pb2.Permission) -> str:
    key, end = _text(perm.key), _text(perm.range_end)
    if not perm.range_end:
        return f"\t{key}\n"
    line = f"\t[{key}, {end})" if end != "\x00" else f"\t[{key}, <open ended>"
    if prefix_end(perm.key) == perm.range_end:
        line += f" (prefix {key})"
    return line + "\n"


def print_role_get(printer: Printer, role: str, resp: Any) -> None:
    if printer.name == "simple":
        read = (auth_pb2.Permission.READ, auth_pb2.Permission.READWRITE)
        write = (auth_pb2.Permission.WRITE, auth_pb2.Permission.READWRITE)
        text = f"Role {role}\nKV Read:\n"
        text += "".join(_perm_line(p) for p in resp.perm if p.permType in read)
        text += "KV Write:\n"
        text += "".join(_perm_line(p) for p in resp.perm if p.permType in write)
        printer.write(text.encode("utf-8", "surrogateescape"))
    elif isinstance(printer, FieldsPrinter):
        printer.header(resp)
        for perm in resp.perm:
            printer.line(f'"PermType" :  {auth_pb2.Permission.Type.Name(perm.permType)}')
            printer.line(f'"Key" : {go_quote(perm.key)}')
            printer.line(f'"RangeEnd" : {go_quote(perm.range_end)}')
    else:
        print_auth(printer, resp, "", fields=False)


def print_names(printer: Printer, resp: Any, names: list[str], fields_label: str | None) -> None:
    """``role list`` / ``user list``: one name per line (fields only for roles)."""
    if printer.name == "simple":
        printer.write("".join(f"{name}\n" for name in names).encode("utf-8", "surrogateescape"))
    elif isinstance(printer, FieldsPrinter) and fields_label is not None:
        printer.header(resp)
        printer.line(f'"{fields_label}" :' + "".join(f" {go_quote(name)}" for name in names))
    else:
        print_auth(printer, resp, "", fields=False)


def print_user_get(printer: Printer, name: str, resp: Any) -> None:
    text = f"User: {name}\nRoles:" + "".join(f" {role}" for role in resp.roles) + "\n"
    print_auth(printer, resp, text, fields=False)
