"""The scripted KV cases run by test_kv_etcdctl.py: each is a sequence of etcdctl invocations.

Every case starts from a fresh single node (empty keyspace, revision 1) started with the case's flags,
so the revisions in the outputs are determined by the sequence of writes alone and must match exactly.
A case runs once per output mode: "json" appends ``-w json`` to every invocation, "simple" leaves the
default output; a case that picks its own ``-w`` runs once, as written.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

MODES = ("json", "simple")


@dataclass(frozen=True, slots=True)
class Step:
    """One ctl invocation: its arguments and what is piped to its stdin."""

    args: tuple[str, ...]
    stdin: str | None = None

    def with_mode(self, mode: str) -> Step:
        if mode == "json":
            return Step((*self.args, "-w", "json"), self.stdin)
        return self

    def __str__(self) -> str:
        text = shlex.join(self.args)
        return text if self.stdin is None else f"{text} <<< {self.stdin!r}"


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    steps: tuple[Step, ...]
    flags: tuple[str, ...] = ()
    modes: tuple[str, ...] = MODES
    notes: str = field(default="", compare=False)


def step(command: str) -> Step:
    return Step(tuple(shlex.split(command)))


def txn(compares: list[str], success: list[str], failure: list[str]) -> Step:
    """etcdctl's non-interactive txn: compares, success ops, failure ops; each ends with a blank line."""
    sections = (compares, success, failure)
    return Step(("txn",), "".join("".join(f"{line}\n" for line in part) + "\n" for part in sections))


def case(name: str, *steps: str | Step, flags: tuple[str, ...] = (), modes: tuple[str, ...] = MODES) -> Case:
    return Case(name, tuple(s if isinstance(s, Step) else step(s) for s in steps), flags, modes)


ABC = ("put a/1 one", "put a/2 two", "put a/3 three", "put b/1 bee", "put c cee")
"""A small keyspace used by range cases: keys a/1 < a/2 < a/3 < b/1 < c at revisions 2..6."""
SORTABLE = ("put k3 x", "put k1 zz", "put k2 y", "put k1 a", "put k3 b", "put k3 c")
"""Keys whose create, modify, version and value orders all differ."""

BIG_VALUE = "v" * 2000
MAX_REQUEST_FLAGS = ("--max-request-bytes=1024",)
MAX_TXN_FLAGS = ("--max-txn-ops=3",)

CASES: tuple[Case, ...] = (
    # -- put ---------------------------------------------------------------------------------------
    case("put_then_get", "put foo bar", "get foo"),
    case("put_overwrite_bumps_version", "put foo bar", "put foo baz", "get foo"),
    case("put_prev_kv_on_new_key", "put foo bar --prev-kv"),
    case("put_prev_kv_on_existing_key", "put foo bar", "put foo baz --prev-kv", "get foo"),
    case("put_empty_value", "put foo ''", "get foo"),
    case("put_empty_key_is_rejected", "put '' x", "get '' --from-key"),
    case("put_ignore_value_keeps_value", "put foo bar", "put foo --ignore-value", "get foo"),
    case("put_ignore_value_on_missing_key", "put foo --ignore-value", "get foo"),
    case("put_ignore_value_with_a_value", "put foo bar", "put foo baz --ignore-value", "get foo"),
    case("put_ignore_lease_without_lease", "put foo bar", "put foo baz --ignore-lease", "get foo"),
    case("put_ignore_lease_on_missing_key", "put foo baz --ignore-lease", "get foo"),
    case("put_with_unknown_lease", "put foo bar --lease=1234abcd", "get foo"),
    case("put_value_with_spaces_and_unicode", "put 'sp ace' 'héllo wörld'", "get 'sp ace'"),
    # -- get ---------------------------------------------------------------------------------------
    case("get_missing_key", "get nope"),
    case("get_prefix", *ABC, "get a/ --prefix"),
    case("get_prefix_empty_means_all", *ABC, "get '' --prefix"),
    case("get_from_key", *ABC, "get a/3 --from-key"),
    case("get_range_end", *ABC, "get a/2 b/1", "get a/1 a/1", "get c a"),
    case("get_limit", *ABC, "get a/ --prefix --limit=2", "get '' --prefix --limit=10"),
    case(
        "get_sort_by_each_target",
        *SORTABLE,
        "get k --prefix --sort-by=KEY",
        "get k --prefix --sort-by=CREATE",
        "get k --prefix --sort-by=MODIFY",
        "get k --prefix --sort-by=VERSION",
        "get k --prefix --sort-by=VALUE",
    ),
    case(
        "get_order_descend",
        *SORTABLE,
        "get k --prefix --order=DESCEND",
        "get k --prefix --sort-by=MODIFY --order=DESCEND",
        "get k --prefix --sort-by=VALUE --order=ASCEND --limit=2",
    ),
    case("get_sort_with_limit", *SORTABLE, "get k --prefix --sort-by=CREATE --order=DESCEND --limit=1"),
    case("get_bad_sort_target", "put k v", "get k --sort-by=COLOR", "get k --order=SIDEWAYS"),
    case("get_keys_only", *ABC, "get a/ --prefix --keys-only"),
    # etcdctl 3.4 has no --count-only (3.5 added it): a faithful quorumctl rejects it the same way.
    case("get_count_only_is_not_a_3_4_flag", "get a/ --prefix --count-only"),
    case("get_print_value_only", *ABC, "get a/ --prefix --print-value-only"),
    case("get_rev_past", "put foo 1", "put foo 2", "put bar 3", "get foo --rev=2", "get '' --prefix --rev=3"),
    case("get_rev_current_and_zero", "put foo 1", "get foo --rev=2", "get foo --rev=0"),
    case("get_rev_future", "put foo 1", "get foo --rev=3", "get foo --rev=100"),
    case("get_rev_compacted", "put foo 1", "put foo 2", "put foo 3", "compaction 3", "get foo --rev=2",
         "get foo --rev=3", "get foo"),
    case("get_serializable", "put foo bar", "get foo --consistency=s"),
    case("get_hex", "put foo bar", "put 'a b' 'c\td'", "get foo --hex", "get '' --prefix --hex"),
    # -- del ---------------------------------------------------------------------------------------
    case("del_single", *ABC, "del a/2", "get '' --prefix --keys-only"),
    case("del_missing_key", "put foo bar", "del nope", "get foo"),
    case("del_prefix", *ABC, "del a/ --prefix", "get '' --prefix --keys-only"),
    case("del_prev_kv", *ABC, "del a/ --prefix --prev-kv", "del c --prev-kv"),
    case("del_from_key", *ABC, "del a/3 --from-key", "get '' --prefix --keys-only"),
    case("del_range_end", *ABC, "del a/2 c", "get '' --prefix --keys-only"),
    case("del_then_put_recreates", "put foo 1", "put foo 2", "del foo", "put foo 3", "get foo"),
    case("del_empty_key_is_rejected", "del ''"),
    # -- txn ---------------------------------------------------------------------------------------
    case("txn_value_compare_success", "put k v1",
         txn(['value("k") = "v1"'], ["put k v2", "get k"], ["put k failed"]), "get k"),
    case("txn_value_compare_failure", "put k v1",
         txn(['value("k") = "nope"'], ["put k v2"], ["put k failed", "get k"]), "get k"),
    case("txn_version_compare", "put k a", "put k b",
         txn(['version("k") = "2"'], ["put ok yes"], ["put ok no"]),
         txn(['version("k") > "5"'], ["put ok2 yes"], ["put ok2 no"]), "get ok --prefix"),
    case("txn_create_and_mod_compare", "put k a", "put other x", "put k b",
         txn(['create("k") = "2"', 'mod("k") = "4"'], ["del other"], ["put other y"]),
         txn(['mod("k") < "3"'], ["put r yes"], ["put r no"]), "get '' --prefix"),
    case("txn_missing_key_compares_zero",
         txn(['version("ghost") = "0"', 'create("ghost") = "0"'], ["put ghost here"], []), "get ghost"),
    case("txn_no_compares_runs_success", txn([], ["put a 1", "put b 2", "get a"], [])),
    case("txn_multiple_ops_and_ranges", *ABC,
         txn(['value("c") = "cee"'], ["get a/ --prefix", "del b/1", "put d dee", "get a z --keys-only"], []),
         "get '' --prefix"),
    case("txn_failure_branch_del_prefix", *ABC,
         txn(['value("c") != "cee"'], ["put x 1"], ["del a/ --prefix", "get a/ --prefix"])),
    case("txn_empty_branches", "put k v", txn(['value("k") = "v"'], [], [])),
    case("txn_duplicate_key_is_rejected", txn([], ["put a 1", "put a 2"], []), "get a"),
    case("txn_duplicate_key_in_failure_branch", txn(['value("x") = "y"'], ["put a 1"], ["put b 1", "del b"])),
    case("txn_too_many_ops", txn([], ["put a 1", "put b 2", "put c 3", "put d 4"], []),
         txn([], ["put a 1", "put b 2", "put c 3"], []), flags=MAX_TXN_FLAGS),
    case("txn_malformed_compare", txn(["this is not a compare"], ["put a 1"], [])),
    # -- compaction ----------------------------------------------------------------------------------
    case("compaction_then_read_below", "put foo 1", "put foo 2", "put bar 1", "compaction 3",
         "get foo --rev=2", "get '' --prefix --rev=3", "get '' --prefix --rev=4"),
    case("compaction_physical", "put foo 1", "put foo 2", "compaction 3 --physical", "get foo --rev=2",
         "get foo"),
    case("compaction_future_revision", "put foo 1", "compaction 100", "compaction 3"),
    case("compaction_twice", "put foo 1", "put foo 2", "compaction 3", "compaction 3", "compaction 2"),
    # -- limits and output formats -------------------------------------------------------------------
    case("request_too_large", f"put big {BIG_VALUE}", "put small ok", "get big", flags=MAX_REQUEST_FLAGS),
    case("write_out_fields", "put foo bar -w fields", "put foo baz --prev-kv -w fields",
         "get foo -w fields", "del foo --prev-kv -w fields", modes=("as-is",)),
    case("write_out_fields_txn", "put k v", Step(("txn", "-w", "fields"), 'value("k") = "v"\n\nget k\n\n\n'),
         modes=("as-is",)),
    case("write_out_hex_json", "put foo bar", "get foo --hex -w json", modes=("as-is",)),
    case("write_out_table_compaction", "put foo 1", "compaction 2 -w table", modes=("as-is",)),
)


def case_ids() -> list[tuple[Case, str]]:
    """Every (case, mode) pair to run."""
    return [(c, m) for c in CASES for m in c.modes]
