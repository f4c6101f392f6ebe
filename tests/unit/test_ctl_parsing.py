"""quorumctl's parsing: Go durations, pflag-style flags, cobra command lookup, txn syntax."""

from __future__ import annotations

import pytest

from cluster.api.gen.etcdserverpb import rpc_pb2
from cluster.ctl.cobra import Command, CommandLineError, find, suggestions
from cluster.ctl.durations import DurationError, format_duration, parse_duration
from cluster.ctl.exits import CtlExit, GoPanic
from cluster.ctl.flags import FlagError, FlagSet, FlagSpec, parse_go_int
from cluster.ctl.kv_commands import GET_FLAGS, build_range, prefix_end
from cluster.ctl.tabwriter import tabwrite
from cluster.ctl.txnparse import TxnInput, argify, go_unquote, parse_compare


@pytest.mark.parametrize(
    ("text", "nanos"),
    [
        ("2s", 2_000_000_000),
        ("500ms", 500_000_000),
        ("1m30s", 90_000_000_000),
        ("0", 0),
        ("1.5h", 5_400_000_000_000),
        ("-3us", -3_000),
        ("250\u00b5s", 250_000),
        ("+1ns", 1),
    ],
)
def test_durations_parse_like_go(text: str, nanos: int) -> None:
    assert parse_duration(text) == nanos


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("abc", 'time: invalid duration "abc"'),
        ("1", 'time: missing unit in duration "1"'),
        ("1x", 'time: unknown unit "x" in duration "1x"'),
        ("", 'time: invalid duration ""'),
    ],
)
def test_bad_durations_give_go_messages(text: str, message: str) -> None:
    with pytest.raises(DurationError, match=message):
        parse_duration(text)


@pytest.mark.parametrize(
    ("nanos", "text"),
    [
        (0, "0s"),
        (1_512_226, "1.512226ms"),
        (90_000_000_000, "1m30s"),
        (5_400_000_000_000, "1h30m0s"),
        (999, "999ns"),
        (1_500, "1.5\u00b5s"),
        (2_000_000_000, "2s"),
    ],
)
def test_durations_format_like_go(nanos: int, text: str) -> None:
    assert format_duration(nanos) == text


def _flags() -> FlagSet:
    return FlagSet(
        {
            s.name: s
            for s in [
                FlagSpec("write-out", "string", "simple", "", "w"),
                FlagSpec("prefix", "bool", False, ""),
                FlagSpec("limit", "int64", 0, ""),
                FlagSpec("endpoints", "stringSlice", ["127.0.0.1:2379"], ""),
                FlagSpec("interactive", "bool", False, "", "i"),
            ]
        }
    )


def test_flags_mix_with_arguments_and_stop_at_double_dash() -> None:
    flags = _flags()
    args = flags.parse(["k", "--prefix", "-w", "json", "--limit=3", "--", "--not-a-flag"])
    assert args == ["k", "--not-a-flag"]
    assert flags.get("prefix") is True and flags.get("write-out") == "json" and flags.get("limit") == 3


def test_shorthands_bundle_and_take_attached_values() -> None:
    flags = _flags()
    flags.parse(["-iwfields"])
    assert flags.get("interactive") is True and flags.get("write-out") == "fields"


def test_bool_flags_accept_explicit_false_and_slices_split_on_commas() -> None:
    flags = _flags()
    flags.parse(["--prefix=false", "--endpoints", "a:1,b:2"])
    assert flags.get("prefix") is False and flags.get("endpoints") == ["a:1", "b:2"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bogus"], "unknown flag: --bogus"),
        (["-x"], "unknown shorthand flag: 'x' in -x"),
        (
            ["--limit", "abc"],
            'invalid argument "abc" for "--limit" flag: strconv.ParseInt: parsing "abc": invalid syntax',
        ),
        (["--limit"], "flag needs an argument: --limit"),
        (["-w"], "flag needs an argument: 'w' in -w"),
    ],
)
def test_flag_errors_use_pflag_messages(args: list[str], message: str) -> None:
    with pytest.raises(FlagError) as err:
        _flags().parse(args)
    assert str(err.value) == message


def test_go_int_parsing_rejects_prefixes_outside_base_zero() -> None:
    assert parse_go_int("ff", 16) == 255
    with pytest.raises(ValueError, match='parsing "0x10": invalid syntax'):
        parse_go_int("0x10", 16)


def _tree() -> Command:
    root = Command("etcdctl", "etcdctl", "", persistent=(FlagSpec("write-out", "string", "simple", "", "w"),))
    root.add(
        Command("get", "get", "", run=lambda _: None),
        Command("txn", "txn", "", run=lambda _: None),
        Command("compaction", "compaction", "", run=lambda _: None),
        Command("completion", "completion", "", run=lambda _: None),
    )
    return root


def test_commands_are_found_by_unique_prefix_past_global_flags() -> None:
    command, rest = find(_tree(), ["-w", "json", "ge", "foo"])
    assert command.name == "get" and rest == ["-w", "json", "foo"]


def test_ambiguous_prefix_is_an_unknown_command_with_suggestions() -> None:
    with pytest.raises(CommandLineError) as err:
        find(_tree(), ["comp"])
    assert str(err.value) == (
        'unknown command "comp" for "etcdctl"\n\nDid you mean this?\n\tcompaction\n\tcompletion\n'
    )
    assert suggestions(_tree(), "x") == "\n\nDid you mean this?\n\ttxn\n"


def test_tabwriter_pads_columns_with_tabs_per_block() -> None:
    text = 'A:\n  --a=1\tfirst\n  --longer-name=""\tsecond\n'
    assert tabwrite(text) == 'A:\n  --a=1\t\t\tfirst\n  --longer-name=""\tsecond\n'


def test_compare_lines_become_compare_messages() -> None:
    cmp = parse_compare('mod("k1") > "5"')
    assert (cmp.target, cmp.result, cmp.key, cmp.mod_revision) == (
        rpc_pb2.Compare.MOD,
        rpc_pb2.Compare.GREATER,
        b"k1",
        5,
    )
    value = parse_compare('val("k") != "a b\\n"')
    assert (value.target, value.result, value.value) == (
        rpc_pb2.Compare.VALUE,
        rpc_pb2.Compare.NOT_EQUAL,
        b"a b\n",
    )


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("mod k1", "malformed comparison: mod k1"),
        ('mod(k1) > "0"', 'malformed comparison: mod(k1) > "0"; got mod("")  ""'),
        ('zap("k") = "1"', 'malformed comparison: zap("k") = "1" (unknown target zap)'),
        ('ver("k") = "x"', 'invalid txn compare request: ver("k") = "x"'),
    ],
)
def test_malformed_compares_report_etcdctl_messages(line: str, message: str) -> None:
    with pytest.raises(CtlExit) as err:
        parse_compare(line)
    assert err.value.message == message and err.value.code == 3


def test_unknown_compare_operator_panics_like_etcdctl() -> None:
    with pytest.raises(GoPanic, match="Unknown result op"):
        parse_compare('mod("k") ~ "1"')


def test_argify_handles_double_quotes_and_etcdctls_single_quote_slicing() -> None:
    assert argify('put "a key" "v\\tx"') == ["put", "a key", "v\tx"]
    assert argify("put k 'abc'") == ["put", "k", "a"]
    assert go_unquote('"\\x41\\u00e9"') == "A\u00e9"


def test_txn_sections_end_at_blank_lines_and_eof_is_an_error() -> None:
    stdin = TxnInput("a\nb\n\nc\n\n")
    assert stdin.section(str) == ["a", "b"]
    assert stdin.section(str) == ["c"]
    with pytest.raises(CtlExit, match="EOF"):
        stdin.section(str)


def test_get_request_building_follows_clientv3_options() -> None:
    flags = FlagSet({s.name: s for s in GET_FLAGS})
    flags.parse(["--prefix", "--order", "ascend", "--sort-by", "key", "--rev", "4"])
    request = build_range(["k"], flags)
    assert (request.key, request.range_end, request.revision) == (b"k", b"l", 4)
    assert request.sort_order == rpc_pb2.RangeRequest.NONE
    assert prefix_end(b"a\xff") == b"b" and prefix_end(b"\xff") == b"\x00"


def test_empty_prefix_means_every_key() -> None:
    flags = FlagSet({s.name: s for s in GET_FLAGS})
    flags.parse(["--prefix"])
    request = build_range([""], flags)
    assert (request.key, request.range_end) == (b"\x00", b"\x00")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("foo://x", "URL scheme must be http, https, unix, or unixs: foo://x"),
        ("http://x", 'URL address does not have the form "host:port": http://x'),
        ("http://x:1/p", "URL must not contain a path: http://x:1/p"),
    ],
)
def test_member_urls_are_checked_like_etcd(url: str, message: str) -> None:
    from cluster.ctl.cluster_commands import validate_urls

    with pytest.raises(CtlExit) as err:
        validate_urls([url])
    assert err.value.message == message
    validate_urls(["http://127.0.0.1:2380", "https://[::1]:2380"])


def test_permission_ranges_follow_etcdctl() -> None:
    from cluster.ctl.auth_commands import GRANT_PERM_FLAGS, perm_range

    def parse(*args: str) -> tuple[str, str]:
        flags = FlagSet({s.name: s for s in GRANT_PERM_FLAGS})
        return perm_range(flags.parse(list(args)), flags)

    assert parse("k") == ("k", "")
    assert parse("k", "--prefix") == ("k", "l")
    assert parse("", "--from-key") == ("\x00", "\x00")
    assert parse("a", "z") == ("a", "z")
    with pytest.raises(CtlExit, match="unexpected endkey argument with --prefix flag"):
        parse("a", "z", "--prefix")
