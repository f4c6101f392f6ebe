"""quorumctl's etcdctl v2 spellings, the parts that need no server: ``member add <name> <url>``'s
arguments and where it appears in the help."""

from __future__ import annotations

import io

import pytest

from cluster.ctl.cluster_commands import member_add_target
from cluster.ctl.exits import EXIT_BAD_ARGS, CtlExit
from cluster.ctl.main import run


def test_member_add_takes_a_second_argument_as_the_peer_urls() -> None:
    assert member_add_target(["infra3", "http://127.0.0.1:2480"], "") == ("infra3", "http://127.0.0.1:2480")
    assert member_add_target(["infra3"], "http://127.0.0.1:2480") == ("infra3", "http://127.0.0.1:2480")


@pytest.mark.parametrize(
    ("args", "peer_urls", "message"),
    [
        ([], "", "member name not provided"),
        (["m"], "", "member peer urls not provided"),
        (["m", ""], "", "member peer urls not provided"),
        (
            ["m", "http://a:1", "http://b:2"],
            "",
            "too many arguments, did you mean --peer-urls=http://a:1, did you mean --peer-urls=http://b:2",
        ),
        (["m", "http://a:1"], "http://b:2", "too many arguments, did you mean --peer-urls=http://a:1"),
    ],
)
def test_member_add_keeps_etcdctls_errors_beyond_the_v2_spelling(
    args: list[str], peer_urls: str, message: str
) -> None:
    with pytest.raises(CtlExit) as raised:
        member_add_target(args, peer_urls)
    assert (raised.value.code, raised.value.message) == (EXIT_BAD_ARGS, message)


def _ctl(*argv: str) -> tuple[int, str, str]:
    stdout, stderr = io.BytesIO(), io.BytesIO()
    code = run(list(argv), io.BytesIO(), stdout, stderr, environ={})
    return code, stdout.getvalue().decode(), stderr.getvalue().decode()


def test_root_help_lists_the_v2_member_add_under_member_add() -> None:
    code, out, _ = _ctl("--help")
    assert code == 0
    lines = out.splitlines()
    add = lines.index("\tmember add <name> <url>\tSame as member add <name> --peer-urls=<url> (etcdctl v2)")
    assert lines[add - 1].startswith("\tmember add\t") and lines[add + 1].startswith("\tmember list\t")


def test_member_group_help_is_etcdctls_without_the_v2_line() -> None:
    _, out, _ = _ctl("member", "--help")
    assert "(etcdctl v2)" not in out
    assert "\tadd\tAdds a member into the cluster\n" in out
