"""``watch``: stream events on a key or range, printed as etcdctl prints them.

``watch key -- cmd args`` runs the command once per event with etcdctl's ETCD_WATCH_* variables;
``watch -i`` reads ``watch ...`` and ``progress`` lines from stdin, all watchers sharing one stream.
Argument handling (``--``, ETCDCTL_WATCH_KEY / ETCDCTL_WATCH_RANGE_END, conflicts) follows etcdctl's
parseWatchArgs, quirks included.
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import BinaryIO

import grpc

from cluster.api import errors as etcd_errors
from cluster.api.gen.etcdserverpb import rpc_pb2
from cluster.api.gen.mvccpb import kv_pb2
from cluster.client import go_status_text
from cluster.client.watch_session import WatchSession
from cluster.ctl.cobra import Command
from cluster.ctl.exits import (
    EXIT_BAD_ARGS,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_INVALID_INPUT,
    CtlExit,
    GoPanic,
)
from cluster.ctl.flags import FlagError, FlagSet, FlagSpec
from cluster.ctl.go_exec import ExecError, child_environ, run_command
from cluster.ctl.goformat import go_quote, message_json
from cluster.ctl.kv_commands import prefix_end
from cluster.ctl.printers import FieldsPrinter, Printer, SimplePrinter
from cluster.ctl.session import Runner, Session
from cluster.ctl.txnparse import argify

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


ERR_BAD_ARGS = "bad number of arguments"
ERR_CONFLICT_ENV = "bad number of arguments (found conflicting environment key)"
ERR_SEPARATOR = "bad number of arguments (found separator --, but no commands)"
ERR_INTERACTIVE = "args[0] must be 'watch' for interactive calls"


@dataclass(frozen=True, slots=True)
class WatchOptions:
    prefix: bool = False
    rev: int = 0
    prev_kv: bool = False

    @classmethod
    def of(cls, flags: FlagSet) -> WatchOptions:
        return cls(bool(flags.get("prefix")), int(flags.get("rev")), bool(flags.get("prev-kv")))


@dataclass(frozen=True, slots=True)
class WatchArgs:
    keys: list[str]
    command: list[str]
    options: WatchOptions


def _bad(message: str) -> CtlExit:
    return CtlExit(EXIT_BAD_ARGS, message)


def _line_flags(words: list[str]) -> tuple[FlagSet, list[str]]:
    """A watch line's own flags (interactive mode parses them without the global ones)."""
    flags = FlagSet({spec.name: spec for spec in WATCH_FLAGS})
    try:
        return flags, flags.parse(words)
    except FlagError as err:
        raise _bad(str(err)) from None


def parse_watch_args(
    argv: list[str], words: list[str], env_key: str, env_range: str, options: WatchOptions | None
) -> WatchArgs:
    """etcdctl's parseWatchArgs: keys, the command to run per event (after ``--``) and, for an
    interactive line (``options`` None), the line's own flags. ``argv`` is the command line as typed
    (what follows its first ``watch`` counts), ``words`` the positional arguments (of the line)."""
    raw = argv[argv.index("watch") + 1:] if "watch" in argv else list(argv)
    keys = list(words)
    interactive = options is None
    if interactive:
        if keys[0] != "watch":
            raise _bad(ERR_INTERACTIVE)
        keys = keys[1:]
        scanned = keys
    else:
        scanned = raw
    has_sep = "--" in scanned
    sep = scanned.index("--") if has_sep else len(scanned) - 1
    if has_sep and sep == len(scanned) - 1:
        raise _bad(ERR_SEPARATOR)
    if interactive:
        line_flags, positional = _line_flags(keys)
        if not has_sep and not env_key and not positional:
            raise _bad(ERR_BAD_ARGS)
        if not has_sep and positional and env_key:
            raise _bad(ERR_CONFLICT_ENV)
        keys = positional
        options = WatchOptions.of(line_flags)
    else:
        if not has_sep and not raw and not env_key:
            raise _bad(ERR_BAD_ARGS)
        if has_sep and env_key and _extra_words(keys, raw, sep):
            raise _bad(ERR_CONFLICT_ENV)
        if not has_sep and keys and env_key:
            raise _bad(ERR_CONFLICT_ENV)
    assert options is not None
    command = scanned[sep + 1:] if has_sep else []
    if env_key:
        keys = [env_key, *([env_range] if env_range else []), *keys]
    if command:
        end = len(keys) - 1
        while end >= 0 and keys[end] != command[0]:
            end -= 1
        if end < 0:
            raise GoPanic("runtime error: slice bounds out of range [:-1]")
        keys = keys[:end]
    return WatchArgs(keys, command, options)


def _extra_words(words: list[str], raw: list[str], sep: int) -> bool:
    """With a key from the environment, did the command line name keys before ``--`` as well?
    (Matches positional words against the command line from the end, as etcdctl does.)"""
    r = len(raw) - 1
    for w in range(len(words) - 1, -1, -1):
        if words[w] == raw[r]:
            r -= 1
            continue
        if r == sep:
            return True
    return False


def watch_request(args: WatchArgs) -> rpc_pb2.WatchCreateRequest:
    """etcdctl's getWatchChan: the create request for ``args`` (CtlExit on bad arguments)."""
    keys, opts = args.keys, args.options
    if not keys:
        raise _bad(ERR_BAD_ARGS)
    key = keys[0].encode("utf-8", "surrogateescape")
    request = rpc_pb2.WatchCreateRequest(key=key, start_revision=opts.rev, prev_kv=opts.prev_kv)
    if len(keys) == 2:
        if opts.prefix:
            raise _bad("`range_end` and `--prefix` are mutually exclusive")
        request.range_end = keys[1].encode("utf-8", "surrogateescape")
    if opts.prefix:
        if not key:
            request.key, request.range_end = b"\x00", b"\x00"
        else:
            request.range_end = prefix_end(key)
    return request


async def print_responses(
    s: Session, responses: AsyncIterator[rpc_pb2.WatchResponse], command: list[str]
) -> None:
    """etcdctl's printWatchCh: print every response; with a command, run it once per event."""
    assert s.printer is not None
    async for resp in responses:
        if resp.created and not resp.events and not resp.canceled:
            continue
        if resp.canceled:
            s.err(f"watch was canceled ({cancel_error(resp)})\n")
        elif not resp.events and not resp.compact_revision and resp.header.revision:
            s.out(f"progress notify: {resp.header.revision}\n")
        print_watch(s.printer, resp)
        s.stdout.flush()
        for event in resp.events if command else ():
            extra = [
                ("ETCD_WATCH_REVISION", str(resp.header.revision)),
                ("ETCD_WATCH_EVENT_TYPE", f'"{_event_type(event)}"'),
                ("ETCD_WATCH_KEY", go_quote(event.kv.key)),
                ("ETCD_WATCH_VALUE", go_quote(event.kv.value)),
            ]
            try:
                await run_command(command, child_environ(s.environ, extra, first=False), s.stdout, s.stderr)
            except ExecError as err:
                quoted = " ".join(go_quote(word) for word in command)
                s.err(f"command [{quoted}] error ({err})\n")
                raise CtlExit(EXIT_ERROR, None) from None


def _env_watch_key(s: Session) -> tuple[str, str]:
    key, range_end = s.environ.get("ETCDCTL_WATCH_KEY", ""), s.environ.get("ETCDCTL_WATCH_RANGE_END", "")
    if not key and range_end:
        raise CtlExit(
            EXIT_BAD_ARGS, f'ETCDCTL_WATCH_KEY is empty but got ETCDCTL_WATCH_RANGE_END="{range_end}"'
        )
    return key, range_end


async def run_watch(s: Session) -> None:
    env_key, env_range = _env_watch_key(s)
    s.env_keys_consumed = WATCH_ENV
    if s.inv.flags.get("interactive"):
        await run_interactive(s, env_key, env_range)
        return
    args = parse_watch_args(s.inv.argv, s.inv.args, env_key, env_range, WatchOptions.of(s.inv.flags))
    client = s.client()
    try:
        await print_responses(s, client.watch(watch_request(args)), args.command)
    finally:
        await client.close()
    raise CtlExit(EXIT_INTERRUPTED, "watch is canceled by the server")


async def run_interactive(s: Session, env_key: str, env_range: str) -> None:
    """``watch -i``: one watch stream; each stdin line is ``watch ...`` (a new watcher, printed as
    its events come) or ``progress``; end of input ends the command."""
    client = s.client()
    session: WatchSession | None = None  # opened by the first request, as clientv3 does
    printers: set[asyncio.Task[None]] = set()
    lines = _stdin_lines(s.stdin)
    try:
        while True:
            raw = await lines.get()
            if raw is None or not raw.endswith(b"\n"):
                raise CtlExit(EXIT_INVALID_INPUT, "Error reading watch request line: EOF")
            line = raw[:-1].decode("utf-8", "surrogateescape")
            words = argify(line)
            if not words:
                s.err(f"Invalid command: {line} (watch and progress supported)\n")
            elif words[0] == "watch":
                if len(words) < 2 and not env_key:
                    s.err(f"Invalid command {line} (command type or key is not provided)\n")
                    continue
                args = parse_watch_args(s.inv.argv, words, env_key, env_range, None)
                try:
                    request = watch_request(args)
                except CtlExit as err:
                    s.err(f"Invalid command {line} ({err.message})\n")
                    continue
                session = session or await client.watch_session()
                responses = await session.create(request)
                task = asyncio.create_task(print_responses(s, responses, args.command))
                printers.add(task)
                task.add_done_callback(functools.partial(_exit_on_failure, s))
            elif words[0] == "progress":
                session = session or await client.watch_session()
                await session.request_progress()
            else:
                s.err(f"Invalid command {line} (only support watch)\n")
    finally:
        for task in printers:
            task.cancel()
        if session is not None:
            await session.close()
        await client.close()


def _exit_on_failure(s: Session, task: asyncio.Task[None]) -> None:
    """A failed per-event command ends etcdctl at once (os.Exit(1)) from whichever watcher ran it."""
    if task.cancelled():
        return
    exc = task.exception()
    if isinstance(exc, CtlExit):
        s.stdout.flush()
        s.stderr.flush()
        os._exit(exc.code)


def _stdin_lines(stdin: BinaryIO) -> asyncio.Queue[bytes | None]:
    """Lines of ``stdin`` read by a daemon thread (a blocked read must not keep the command alive)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()

    def read() -> None:
        while True:
            line = stdin.readline()
            loop.call_soon_threadsafe(queue.put_nowait, line or None)
            if not line.endswith(b"\n"):
                return

    threading.Thread(target=read, name="watch-stdin", daemon=True).start()
    return queue


def watch_command(runner: Runner) -> Command:
    return Command(
        "watch",
        "watch [options] [key or prefix] [range_end] [--] [exec-command arg1 arg2 ...]",
        "Watches events stream on keys or prefixes",
        flags=WATCH_FLAGS,
        run=runner(run_watch),
    )
