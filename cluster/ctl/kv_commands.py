"""put, get, del, txn and compaction: argument rules, request building and output as etcdctl."""

from __future__ import annotations

from cluster.api.gen.etcdserverpb import rpc_pb2
from cluster.api.keys import prefix_end
from cluster.ctl.cobra import Command, CommandLineError, find
from cluster.ctl.exits import EXIT_BAD_ARGS, EXIT_BAD_FEATURE, EXIT_ERROR, EXIT_INVALID_INPUT, CtlExit
from cluster.ctl.flags import FlagError, FlagSet, FlagSpec, parse_go_int
from cluster.ctl.session import Runner, Session, stdin_text
from cluster.ctl.txnparse import TxnInput, argify, parse_compare

PUT_FLAGS = (
    FlagSpec("lease", "string", "0", "lease ID (in hexadecimal) to attach to the key"),
    FlagSpec("prev-kv", "bool", False, "return the previous key-value pair before modification"),
    FlagSpec("ignore-value", "bool", False, "updates the key using its current value"),
    FlagSpec("ignore-lease", "bool", False, "updates the key using its current lease"),
)
GET_FLAGS = (
    FlagSpec("consistency", "string", "l", "Linearizable(l) or Serializable(s)"),
    FlagSpec("order", "string", "", "Order of results; ASCEND or DESCEND (ASCEND by default)"),
    FlagSpec("sort-by", "string", "", "Sort target; CREATE, KEY, MODIFY, VALUE, or VERSION"),
    FlagSpec("limit", "int64", 0, "Maximum number of results"),
    FlagSpec("prefix", "bool", False, "Get keys with matching prefix"),
    FlagSpec(
        "from-key",
        "bool",
        False,
        "Get keys that are greater than or equal to the given key using byte compare",
    ),
    FlagSpec("rev", "int64", 0, "Specify the kv revision"),
    FlagSpec("keys-only", "bool", False, "Get only the keys"),
    FlagSpec("print-value-only", "bool", False, 'Only write values when using the "simple" output format'),
)
DEL_FLAGS = (
    FlagSpec("prefix", "bool", False, "delete keys with matching prefix"),
    FlagSpec("prev-kv", "bool", False, "return deleted key-value pairs"),
    FlagSpec(
        "from-key",
        "bool",
        False,
        "delete keys that are greater than or equal to the given key using byte compare",
    ),
)
TXN_FLAGS = (FlagSpec("interactive", "bool", False, "Input transaction in interactive mode", "i"),)
COMPACTION_FLAGS = (
    FlagSpec(
        "physical", "bool", False, "'true' to wait for compaction to physically remove all old revisions"
    ),
)

PUT_LONG = """
Puts the given key into the store.

When <value> begins with '-', <value> is interpreted as a flag.
Insert '--' for workaround:

$ put <key> -- <value>
$ put -- <key> <value>

If <value> isn't given as a command line argument and '--ignore-value' is not specified,
this command tries to read the value from standard input.

If <lease> isn't given as a command line argument and '--ignore-lease' is not specified,
this command tries to read the value from standard input.

For example,
$ cat file | put <key>
will store the content of the file to <key>.
"""

_SORT_ORDERS = {"ASCEND": rpc_pb2.RangeRequest.ASCEND, "DESCEND": rpc_pb2.RangeRequest.DESCEND, "": None}
_SORT_TARGETS = {
    "CREATE": rpc_pb2.RangeRequest.CREATE,
    "KEY": rpc_pb2.RangeRequest.KEY,
    "MODIFY": rpc_pb2.RangeRequest.MOD,
    "VALUE": rpc_pb2.RangeRequest.VALUE,
    "VERSION": rpc_pb2.RangeRequest.VERSION,
    "": rpc_pb2.RangeRequest.KEY,
}


def _b(text: str) -> bytes:
    return text.encode("utf-8", errors="surrogateescape")




def _apply_prefix_or_from_key(key: str, prefix: bool, from_key: bool) -> tuple[bytes, bytes | None]:
    raw, end = _b(key), None
    if prefix:
        if not raw:
            raw, end = b"\x00", b"\x00"
        else:
            end = prefix_end(raw)
    if from_key:
        if not raw:
            raw = b"\x00"
        end = b"\x00"
    return raw, end


def build_put(
    args: list[str], flags: FlagSet, stdin: TxnInput | None, session: Session
) -> rpc_pb2.PutRequest:
    if not args:
        raise CtlExit(EXIT_BAD_ARGS, "put command needs 1 argument and input from stdin or 2 arguments")
    ignore_value = bool(flags.get("ignore-value"))
    if ignore_value and len(args) > 1:
        raise CtlExit(EXIT_BAD_ARGS, "put command needs only 1 argument when 'ignore-value' is set")
    value = ""
    if not ignore_value:
        if len(args) > 1:
            value = args[1]
        else:
            value = stdin.rest() if stdin is not None else stdin_text(session.stdin)
            if value == "":
                raise CtlExit(
                    EXIT_BAD_ARGS, "put command needs 1 argument and input from stdin or 2 arguments"
                )
    try:
        lease = parse_go_int(str(flags.get("lease")), 16)
    except ValueError as err:
        raise CtlExit(EXIT_BAD_ARGS, f"bad lease ID ({err}), expecting ID in Hex") from None
    return rpc_pb2.PutRequest(
        key=_b(args[0]),
        value=_b(value),
        lease=lease,
        prev_kv=bool(flags.get("prev-kv")),
        ignore_value=ignore_value,
        ignore_lease=bool(flags.get("ignore-lease")),
    )


def build_range(args: list[str], flags: FlagSet) -> rpc_pb2.RangeRequest:
    if not args:
        raise CtlExit(
            EXIT_BAD_ARGS, "get command needs one argument as key and an optional argument as range_end"
        )
    prefix, from_key = bool(flags.get("prefix")), bool(flags.get("from-key"))
    if prefix and from_key:
        raise CtlExit(EXIT_BAD_ARGS, "`--prefix` and `--from-key` cannot be set at the same time, choose one")
    consistency = str(flags.get("consistency"))
    if consistency not in ("s", "l"):
        raise CtlExit(EXIT_BAD_FEATURE, f'unknown consistency flag "{consistency}"')
    request = rpc_pb2.RangeRequest(serializable=consistency == "s")
    if len(args) > 1:
        if prefix or from_key:
            raise CtlExit(
                EXIT_BAD_ARGS,
                "too many arguments, only accept one argument when `--prefix` or `--from-key` is set",
            )
        request.range_end = _b(args[1])
    request.limit = int(flags.get("limit"))  # type: ignore[call-overload]
    rev = int(flags.get("rev"))  # type: ignore[call-overload]
    if rev > 0:
        request.revision = rev
    order_text = str(flags.get("order"))
    if order_text.upper() not in _SORT_ORDERS:
        raise CtlExit(EXIT_BAD_FEATURE, f"bad sort order {order_text}")
    order = _SORT_ORDERS[order_text.upper()]
    target_text = str(flags.get("sort-by"))
    if target_text.upper() not in _SORT_TARGETS:
        raise CtlExit(EXIT_BAD_FEATURE, f"bad sort target {target_text}")
    target = _SORT_TARGETS[target_text.upper()]
    if order is not None and not (
        target == rpc_pb2.RangeRequest.KEY and order == rpc_pb2.RangeRequest.ASCEND
    ):
        request.sort_order = order
    request.sort_target = target
    key, end = _apply_prefix_or_from_key(args[0], prefix, from_key)
    request.key = key
    if end is not None:
        request.range_end = end
    request.keys_only = bool(flags.get("keys-only"))
    return request


def build_delete(args: list[str], flags: FlagSet) -> rpc_pb2.DeleteRangeRequest:
    if not args or len(args) > 2:
        raise CtlExit(
            EXIT_BAD_ARGS, "del command needs one argument as key and an optional argument as range_end"
        )
    prefix, from_key = bool(flags.get("prefix")), bool(flags.get("from-key"))
    if prefix and from_key:
        raise CtlExit(EXIT_BAD_ARGS, "`--prefix` and `--from-key` cannot be set at the same time, choose one")
    request = rpc_pb2.DeleteRangeRequest()
    if len(args) > 1:
        if prefix or from_key:
            raise CtlExit(
                EXIT_BAD_ARGS,
                "too many arguments, only accept one argument when `--prefix` or `--from-key` is set",
            )
        request.range_end = _b(args[1])
    key, end = _apply_prefix_or_from_key(args[0], prefix, from_key)
    request.key = key
    if end is not None:
        request.range_end = end
    request.prev_kv = bool(flags.get("prev-kv"))
    return request


async def run_put(s: Session) -> None:
    request = build_put(s.inv.args, s.inv.flags, None, s)
    async with s.client() as client:
        response = await client.put(request, timeout=s.seconds("command-timeout"))
    assert s.printer is not None
    s.printer.put(response)


async def run_get(s: Session) -> None:
    request = build_range(s.inv.args, s.inv.flags)
    async with s.client() as client:
        response = await client.range(request, timeout=s.seconds("command-timeout"))
    assert s.printer is not None
    if s.inv.flags.get("print-value-only"):
        simple = s.simple_printer()
        if simple is None:
            raise CtlExit(EXIT_BAD_ARGS, "print-value-only is only for `--write-out=simple`")
        simple.value_only = True
    s.printer.get(response)


async def run_del(s: Session) -> None:
    request = build_delete(s.inv.args, s.inv.flags)
    async with s.client() as client:
        response = await client.delete_range(request, timeout=s.seconds("command-timeout"))
    assert s.printer is not None
    s.printer.delete(response)


def _op_parser(stdin: TxnInput, session: Session):  # type: ignore[no-untyped-def]
    """Parse one txn request line with a throwaway put/get/del command tree (as etcdctl does)."""
    ops_root = Command("", "", "")
    ops_root.add(
        Command("put", "put", "", flags=PUT_FLAGS, run=lambda _: None),
        Command("get", "get", "", flags=GET_FLAGS, run=lambda _: None),
        Command("del", "del", "", flags=DEL_FLAGS, run=lambda _: None),
    )

    def parse(line: str) -> rpc_pb2.RequestOp:
        args = argify(line)
        if len(args) < 2:
            raise CtlExit(EXIT_INVALID_INPUT, f"invalid txn compare request: {line}")
        try:
            command, rest = find(ops_root, args)
            if command is ops_root:
                raise CtlExit(EXIT_INVALID_INPUT, f"invalid txn request: {line}")
            flags = command.flag_set()
            positional = flags.parse(rest)
        except (CommandLineError, FlagError):
            raise CtlExit(EXIT_INVALID_INPUT, f"invalid txn request: {line}") from None
        if command.name == "put":
            return rpc_pb2.RequestOp(request_put=build_put(positional, flags, stdin, session))
        if command.name == "get":
            return rpc_pb2.RequestOp(request_range=build_range(positional, flags))
        return rpc_pb2.RequestOp(request_delete_range=build_delete(positional, flags))

    return parse


async def run_txn(s: Session) -> None:
    if s.inv.args:
        raise CtlExit(EXIT_BAD_ARGS, "txn command does not accept argument")
    client = s.client()
    try:
        interactive = bool(s.inv.flags.get("interactive"))
        stdin = TxnInput(stdin_text(s.stdin))
        parse_op = _op_parser(stdin, s)

        def prompt(text: str) -> None:
            if interactive:
                s.out(text + "\n")

        prompt("compares:")
        compares = stdin.section(parse_compare)
        prompt("success requests (get, put, del):")
        success = stdin.section(parse_op)
        prompt("failure requests (get, put, del):")
        failure = stdin.section(parse_op)
        request = rpc_pb2.TxnRequest(
            compare=compares,  # type: ignore[arg-type]
            success=success,  # type: ignore[arg-type]
            failure=failure,  # type: ignore[arg-type]
        )
        response = await client.txn(request)
    finally:
        await client.close()
    assert s.printer is not None
    s.printer.txn(response)


async def run_compaction(s: Session) -> None:
    if len(s.inv.args) != 1:
        raise CtlExit(EXIT_BAD_ARGS, "compaction command needs 1 argument")
    try:
        revision = parse_go_int(s.inv.args[0], 10)
    except ValueError as err:
        raise CtlExit(EXIT_ERROR, str(err)) from None
    request = rpc_pb2.CompactionRequest(revision=revision, physical=bool(s.inv.flags.get("physical")))
    async with s.client() as client:
        await client.compact(request, timeout=s.seconds("command-timeout"))
    s.out(f"compacted revision {revision}\n")


def kv_commands(runner: Runner) -> list[Command]:
    """The KV commands, each bound through ``runner`` (which turns an async handler into ``run``)."""
    return [
        Command(
            "get",
            "get [options] <key> [range_end]",
            "Gets the key or a range of keys",
            flags=GET_FLAGS,
            run=runner(run_get),
        ),
        Command(
            "put",
            "put [options] <key> <value> (<value> can also be given from stdin)",
            "Puts the given key into the store",
            long=PUT_LONG,
            flags=PUT_FLAGS,
            run=runner(run_put),
        ),
        Command(
            "del",
            "del [options] <key> [range_end]",
            "Removes the specified key or range of keys [key, range_end)",
            flags=DEL_FLAGS,
            run=runner(run_del),
        ),
        Command(
            "txn",
            "txn [options]",
            "Txn processes all the requests in one transaction",
            flags=TXN_FLAGS,
            run=runner(run_txn),
        ),
        Command(
            "compaction",
            "compaction [options] <revision>",
            "Compacts the event history in etcd",
            flags=COMPACTION_FLAGS,
            run=runner(run_compaction),
        ),
    ]
