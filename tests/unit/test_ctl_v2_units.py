"""quorumctl's etcdctl v2 spellings, the parts that need no server: ``member add <name> <url>``'s
arguments, how ``cluster-health`` reads ``/health`` and words failures (expected texts are what Go
1.19's encoding/json and net/http print, as etcdctl 3.4.23 is built with), and where both appear in
the help."""

from __future__ import annotations

import asyncio
import io

import httpx
import pytest

from cluster.api.gen.etcdserverpb import rpc_pb2
from cluster.ctl.cluster_commands import member_add_target
from cluster.ctl.cluster_health import (
    HealthCheckFailed,
    check_member,
    cluster_verdict,
    go_transport_error,
    v2_health_result,
)
from cluster.ctl.exits import EXIT_BAD_ARGS, CtlExit
from cluster.ctl.main import run
from cluster.testing.ports import free_port


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


@pytest.mark.parametrize(
    ("body", "healthy"),
    [
        (b'{"health":"true"}', True),
        (b'{"health":true}', True),
        (b'{"HEALTH":"true"}', True),
        (b'{"health":"false"}', False),
        (b'{"health":"TRUE"}', False),
        (b"{}", False),
        (b"null", False),
        (b'{"health":null}', False),
        (b'{"health":"true","health":"false"}', False),
    ],
)
def test_health_bodies_are_read_as_v2_reads_them(body: bytes, healthy: bool) -> None:
    assert v2_health_result(body) is healthy


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "unexpected end of JSON input"),
        (b'{"health":"tr', "unexpected end of JSON input"),
        (b"<html>", "invalid character '<' looking for beginning of value"),
        (b'{"health":"true"} x', "invalid character 'x' after top-level value"),
        (b'{"health":1}', "json: cannot unmarshal number into Go struct field .Health of type bool"),
        (b'{"health":{}}', "json: cannot unmarshal object into Go struct field .Health of type bool"),
        (b'{"health":[1]}', "json: cannot unmarshal array into Go struct field .Health of type bool"),
        (b"[]", "json: cannot unmarshal array into Go value of type struct { Health bool }"),
        (b'"x"', "json: cannot unmarshal string into Go value of type struct { Health bool }"),
    ],
)
def test_unreadable_health_bodies_fail_with_gos_json_message(body: bytes, message: str) -> None:
    with pytest.raises(HealthCheckFailed) as raised:
        v2_health_result(body)
    assert str(raised.value) == message


def _get_error(url: str) -> str:
    async def get() -> str:
        async with httpx.AsyncClient(trust_env=False, timeout=5) as http:
            try:
                await http.get(url + "/health")
            except httpx.HTTPError as err:
                return go_transport_error(url, err)
        raise AssertionError(f"GET {url}/health answered")

    return asyncio.run(get())


def test_transport_failures_are_worded_as_gos_http_client() -> None:
    port = free_port()
    assert _get_error(f"http://127.0.0.1:{port}") == f"dial tcp 127.0.0.1:{port}: connect: connection refused"
    assert _get_error("unix://x:1") == 'unsupported protocol scheme "unix"'


def test_a_member_without_a_reachable_url_is_reported_like_v2() -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    member = rpc_pb2.Member(ID=0xABC, clientURLs=[url])

    async def check() -> tuple[tuple[str, ...], bool]:
        async with httpx.AsyncClient(trust_env=False, timeout=5) as http:
            result = await check_member(http, member)
            return result.lines, result.healthy

    assert asyncio.run(check()) == (
        (
            f'failed to check the health of member abc on {url}: Get "{url}/health": '
            f"dial tcp 127.0.0.1:{port}: connect: connection refused",
            f"member abc is unreachable: [{url}] are all unreachable",
        ),
        False,
    )


@pytest.mark.parametrize(
    ("healthy", "members", "verdict"),
    [
        (3, 3, "cluster is healthy"),
        (2, 3, "cluster is degraded"),
        (0, 3, "cluster is unavailable"),
        (0, 0, "cluster is healthy"),
    ],
)
def test_cluster_verdict_is_v2s(healthy: int, members: int, verdict: str) -> None:
    assert cluster_verdict(healthy, members) == verdict


def _ctl(*argv: str) -> tuple[int, str, str]:
    stdout, stderr = io.BytesIO(), io.BytesIO()
    code = run(list(argv), io.BytesIO(), stdout, stderr, environ={})
    return code, stdout.getvalue().decode(), stderr.getvalue().decode()


def test_root_help_lists_the_v2_spellings_in_place() -> None:
    code, out, _ = _ctl("--help")
    assert code == 0
    lines = out.splitlines()
    health = lines.index("\tcluster-health\t\tChecks the health of the etcd cluster (etcdctl v2)")
    assert lines[health - 1].startswith("\tcheck perf\t") and lines[health + 1].startswith("\tcompaction\t")
    add = lines.index("\tmember add <name> <url>\tSame as member add <name> --peer-urls=<url> (etcdctl v2)")
    assert lines[add - 1].startswith("\tmember add\t") and lines[add + 1].startswith("\tmember list\t")


def test_member_group_help_is_etcdctls_without_the_v2_line() -> None:
    _, out, _ = _ctl("member", "--help")
    assert "(etcdctl v2)" not in out
    assert "\tadd\tAdds a member into the cluster\n" in out


def test_cluster_health_is_not_found_by_a_prefix() -> None:
    code, _, err = _ctl("cluster")
    assert code == 1
    assert err.startswith('Error: unknown command "cluster" for "etcdctl"')
