"""quorumctl's watch argument rules are etcdctl's: every row of etcdctl's own parseWatchArgs test table
(read from Debian's golang-etcd-server-dev at test time, like the wire-contract test reads etcd's
protos) must give the same keys, command, interactive flags and error."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from cluster.ctl.exits import CtlExit
from cluster.ctl.watch_command import (
    ERR_BAD_ARGS,
    ERR_CONFLICT_ENV,
    ERR_INTERACTIVE,
    ERR_SEPARATOR,
    WatchOptions,
    parse_watch_args,
)

TABLE = Path("/usr/share/gocode/src/go.etcd.io/etcd/etcdctl/ctlv3/command/watch_command_test.go")
ERRORS = {
    "nil": None,
    "errBadArgsNum": ERR_BAD_ARGS,
    "errBadArgsNumConflictEnv": ERR_CONFLICT_ENV,
    "errBadArgsNumSeparator": ERR_SEPARATOR,
    "errBadArgsInteractiveWatch": ERR_INTERACTIVE,
}
_FIELD = re.compile(r"^\s*(\w+):\s*(.*),\s*$")
_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')


def _value(text: str) -> Any:
    if text == "nil":
        return None
    if text.startswith("[]string{"):
        return _STRING.findall(text)
    if text in ("true", "false"):
        return text == "true"
    if text.startswith('"'):
        return _STRING.findall(text)[0]
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    return text  # an error variable's name


def etcdctl_rows() -> list[dict[str, Any]]:
    if not TABLE.exists():
        return []
    body = TABLE.read_text().split("}{", 1)[1].split("\n\t}\n\tfor ", 1)[0]
    rows: list[dict[str, Any]] = []
    for chunk in body.split("\n\t\t{\n")[1:]:
        row: dict[str, Any] = {}
        for line in chunk.splitlines():
            match = _FIELD.match(line)
            if match:
                row[match.group(1)] = _value(match.group(2))
        rows.append(row)
    return rows


ROWS = etcdctl_rows()


@pytest.mark.skipif(not ROWS, reason="etcdctl's watch_command_test.go not installed (golang-etcd-server-dev)")
@pytest.mark.parametrize("row", ROWS, ids=[f"row{i}" for i in range(len(ROWS))])
def test_watch_arguments_parse_as_etcdctl_parses_them(row: dict[str, Any]) -> None:
    interactive = bool(row.get("interactive"))
    expected_error = ERRORS[row.get("err") or "nil"]
    try:
        got = parse_watch_args(list(row.get("osArgs") or []), list(row.get("commandArgs") or []),
                               row.get("envKey") or "", row.get("envRange") or "",
                               None if interactive else WatchOptions())
    except CtlExit as exc:
        assert exc.message == expected_error
        return
    assert expected_error is None
    assert got.keys == (row.get("watchArgs") or [])
    assert got.command == (row.get("execArgs") or [])
    if interactive:
        assert got.options == WatchOptions(
            bool(row.get("interactiveWatchPrefix")),
            int(row.get("interactiveWatchRev") or 0),
            bool(row.get("interactiveWatchPrevKey")),
        )


def test_the_table_was_read() -> None:
    if TABLE.exists():
        assert len(ROWS) >= 20
