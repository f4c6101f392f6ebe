"""``watch`` (non-interactive): stream events on a key or range, printed as etcdctl prints them.

Running a command per event (``watch key -- cmd args``) and interactive mode (``-i``) are not
implemented; asking for them fails with a clear message.
"""

from __future__ import annotations

import grpc

from cluster.api import errors as etcd_errors
from cluster.api.gen.etcdserverpb import rpc_pb2
from cluster.api.gen.mvccpb import kv_pb2
from cluster.client import go_status_text
from cluster.ctl.cobra import Command
from cluster.ctl.exits import EXIT_BAD_ARGS, EXIT_ERROR, EXIT_INTERRUPTED, CtlExit
from cluster.ctl.flags import FlagSpec
from cluster.ctl.goformat import message_json
from cluster.ctl.kv_commands import prefix_end
from cluster.ctl.printers import FieldsPrinter, Printer, SimplePrinter
from cluster.ctl.session import Runner, Session

WATCH_FLAGS = (
    FlagSpec("interactive", "bool", False, "Interactive mode", "i"),
    FlagSpec("prefix", "bool", False, "Watch on a prefix if prefix is set"),
    FlagSpec("rev", "int64", 0, "Revision to start watching"),
    FlagSpec("prev-kv", "bool", False, "get the previous key-value pair before the event happens"),
)
WATCH_ENV = ("ETCDCTL_WATCH_KEY", "ETCDCTL_WATCH_RANGE_END")


def _event_type(event: kv_pb2.Event) -> str:
    return str(kv_pb2.Event.EventType.Name(event.type))


def print_watch(printer: Printer, resp: rpc_pb2.WatchResponse) -> None:
    """One watch response in the chosen format (etcdctl's ``display.Watch``)."""
    if isinstance(printer, SimplePrinter):
        for event in resp.events:
            printer.write(_event_type(event) + "\n")
            if event.HasField("prev_kv"):
                printer.kv(event.prev_kv)
            printer.kv(event.kv)
    elif isinstance(printer, FieldsPrinter):
        header = rpc_pb2.WatchResponse()
        header.header.CopyFrom(resp.header)
        printer.header(header)
        for event in resp.events:
            printer.line(f'"Type" : {_event_type(event)}')
            if event.HasField("prev_kv"):
                printer.kv("Prev", event.prev_kv)
            printer.kv("", event.kv)
    elif printer.name == "json":
        events = "[" + ",".join(message_json(e) for e in resp.events) + "]" if resp.events else "null"
        printer.write(
            f'{{"Header":{message_json(resp.header)},"Events":{events},'
            f'"CompactRevision":{resp.compact_revision},"Canceled":{_go_bool(resp.canceled)},'
            f'"Created":{_go_bool(resp.created)}}}\n'
        )
    elif printer.name == "protobuf":
        out = rpc_pb2.WatchResponse(
            events=resp.events,
            compact_revision=resp.compact_revision,
            canceled=resp.canceled,
            created=resp.created,
        )
        out.header.CopyFrom(resp.header)
        out.header.SetInParent()
        printer.write(out.SerializeToString())
    else:
        raise printer.unsupported()


def _go_bool(value: bool) -> str:
    return "true" if value else "false"


def cancel_error(resp: rpc_pb2.WatchResponse) -> str:
    """clientv3's ``WatchResponse.Err()`` text for a canceled watch."""
    if resp.compact_revision:
        return etcd_errors.COMPACTED.message
    if resp.cancel_reason:
        known = etcd_errors.lookup(resp.cancel_reason)
        if known is not None:
            return known.message
        return go_status_text(grpc.StatusCode.FAILED_PRECONDITION, resp.cancel_reason)
    return etcd_errors.FUTURE_REV.message


def _watch_args(s: Session) -> list[str]:
    if "--" in s.inv.raw_args:
        raise CtlExit(EXIT_ERROR, "running a command per watch event is not implemented by quorumctl yet")
    key, range_end = s.environ.get("ETCDCTL_WATCH_KEY", ""), s.environ.get("ETCDCTL_WATCH_RANGE_END", "")
    if not key and range_end:
        raise CtlExit(
            EXIT_BAD_ARGS, f'ETCDCTL_WATCH_KEY is empty but got ETCDCTL_WATCH_RANGE_END="{range_end}"'
        )
    args = list(s.inv.args)
    if not args and not key:
        raise CtlExit(EXIT_BAD_ARGS, "bad number of arguments")
    if args and key:
        raise CtlExit(EXIT_BAD_ARGS, "bad number of arguments (found conflicting environment key)")
    if key:
        args = [key, *([range_end] if range_end else [])]
    return args


async def run_watch(s: Session) -> None:
    if s.inv.flags.get("interactive"):
        raise CtlExit(EXIT_ERROR, "interactive watch is not implemented by quorumctl yet")
    args = _watch_args(s)
    s.env_keys_consumed = WATCH_ENV
    client = s.client()
    try:
        key = args[0].encode("utf-8", "surrogateescape")
        request = rpc_pb2.WatchCreateRequest(
            key=key,
            start_revision=int(s.inv.flags.get("rev")),  # type: ignore[call-overload]
            prev_kv=bool(s.inv.flags.get("prev-kv")),
        )
        if len(args) == 2:
            if s.inv.flags.get("prefix"):
                raise CtlExit(EXIT_BAD_ARGS, "`range_end` and `--prefix` are mutually exclusive")
            request.range_end = args[1].encode("utf-8", "surrogateescape")
        if s.inv.flags.get("prefix"):
            if not key:
                request.key, request.range_end = b"\x00", b"\x00"
            else:
                request.range_end = prefix_end(key)
        assert s.printer is not None
        async for resp in client.watch(request):
            if resp.created and not resp.events and not resp.canceled:
                continue
            if resp.canceled:
                s.err(f"watch was canceled ({cancel_error(resp)})\n")
            elif not resp.events and not resp.compact_revision and resp.header.revision:
                s.out(f"progress notify: {resp.header.revision}\n")
            print_watch(s.printer, resp)
            s.stdout.flush()
    finally:
        await client.close()
    raise CtlExit(EXIT_INTERRUPTED, "watch is canceled by the server")


def watch_command(runner: Runner) -> Command:
    return Command(
        "watch",
        "watch [options] [key or prefix] [range_end] [--] [exec-command arg1 arg2 ...]",
        "Watches events stream on keys or prefixes",
        flags=WATCH_FLAGS,
        run=runner(run_watch),
    )
