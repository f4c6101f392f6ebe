"""``cluster-health``: etcdctl v2's command, kept because operators' runbooks still use it.

etcdctl 3.4 runs it only with ETCDCTL_API=2, over the v2 members API that etcd 3.4 serves only with
``--enable-v2``. quorumctl takes the member list from the v3 MemberList on ``--endpoints`` instead,
then does what v2 does (ctlv2/command/cluster_health.go): ``GET <clientURL>/health`` on each
member's client URLs in turn until one answers, and prints v2's lines, strings and exit codes
(0 healthy, 5 not healthy, 4 when the members cannot be listed). Failed checks are worded as Go's
net/http words them, so the output is v2's byte for byte on the usual failures (checked against the
real etcdctl v2 in tests/integration/test_ctl_v2_spellings.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlsplit

from cluster.api.gen.etcdserverpb import rpc_pb2
from cluster.ctl.cluster_commands import V2_MARK
from cluster.ctl.cobra import Command
from cluster.ctl.exits import CtlExit
from cluster.ctl.flags import FlagSpec
from cluster.ctl.goformat import go_quote
from cluster.ctl.session import Runner, Session
from cluster.services.jsonpb import go_json_error

if TYPE_CHECKING:
    import httpx

EXIT_SERVER_ERROR = 4
"""etcdctl v2's ExitServerError (its codes are not v3's)."""
EXIT_CLUSTER_NOT_HEALTHY = 5
FOREVER_INTERVAL = 10.0
CLUSTER_HEALTH_FLAGS = (
    FlagSpec("forever", "bool", False, "forever check the health every 10 second until CTRL+C", "f"),
)


@dataclass(frozen=True, slots=True)
class MemberHealth:
    """What v2 prints for one member, and whether the member counts as healthy."""

    lines: tuple[str, ...]
    healthy: bool


class HealthCheckFailed(Exception):
    """One client URL could not be checked; the message is what v2 prints after the URL."""


def v2_health_result(body: bytes) -> bool:
    """``/health``'s verdict as v2 reads the body: ``{"health":"true"}`` or ``{"health":true}``.

    v2 unmarshals into ``struct{ Health string }``, then, failing that, ``struct{ Health bool }``;
    Go matches the key case-insensitively (the last match wins) and ignores the status code. A body
    that is neither raises HealthCheckFailed with Go's encoding/json message.
    """
    text = body.decode("utf-8", "replace")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise HealthCheckFailed(_go_syntax_error(err)) from None
    if doc is None:
        return False
    if not isinstance(doc, dict):
        raise HealthCheckFailed(
            f"json: cannot unmarshal {_go_kind(doc)} into Go value of type struct {{ Health bool }}"
        )
    value: Any = None
    for key, item in doc.items():
        if key.lower() == "health":
            value = item
    if value is None or isinstance(value, (str, bool)):
        return value in ("true", True)
    raise HealthCheckFailed(
        f"json: cannot unmarshal {_go_kind(value)} into Go struct field .Health of type bool"
    )


def _go_syntax_error(err: json.JSONDecodeError) -> str:
    """json.Unmarshal's SyntaxError text (its checkValid pass, which sees the whole input)."""
    if err.pos >= len(err.doc) or err.msg.startswith("Unterminated string"):
        return "unexpected end of JSON input"
    if err.msg == "Extra data":
        char = err.doc[err.pos]
        shown = {"'": "\\'", '"': '"'}.get(char) or json.dumps(char)[1:-1]
        return f"invalid character '{shown}' after top-level value"
    return go_json_error(err)


def _go_kind(value: object) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _dial_address(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _os_error(err: BaseException) -> OSError | None:
    """The socket's own error, with its errno, under httpx's, httpcore's and anyio's wrappers."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno is not None:
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def go_transport_error(url: str, err: Exception) -> str:
    """What Go's http.Client says (after ``Get "<url>/health": ``) for httpx's ``err`` on ``url``."""
    import httpx

    if isinstance(err, httpx.UnsupportedProtocol):
        return f"unsupported protocol scheme {go_quote(urlsplit(url).scheme)}"
    if isinstance(err, httpx.ConnectTimeout):
        return f"dial tcp {_dial_address(url)}: i/o timeout"
    if isinstance(err, httpx.TimeoutException):
        return "context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
    if isinstance(err, httpx.RemoteProtocolError) and "disconnected" in str(err):
        return "EOF"
    cause = _os_error(err)
    if isinstance(err, httpx.ConnectError) and cause is not None:
        if isinstance(cause, socket.gaierror):
            return f"dial tcp: lookup {urlsplit(url).hostname}: no such host"
        if cause.errno is not None and not isinstance(cause, ssl.SSLError):
            return f"dial tcp {_dial_address(url)}: connect: {os.strerror(cause.errno).lower()}"
    return str(cause or err)


async def check_member(http: httpx.AsyncClient, member: rpc_pb2.Member) -> MemberHealth:
    """v2's check of one member: its client URLs in order, until one gives a readable answer."""
    import httpx

    member_id = f"{member.ID:x}"
    if not member.clientURLs:
        return MemberHealth(
            (f"member {member_id} is unreachable: no available published client urls",), False
        )
    lines: list[str] = []
    for url in member.clientURLs:
        target = url + "/health"
        try:
            try:
                response = await http.get(target)
            except httpx.HTTPError as err:
                raise HealthCheckFailed(f"Get {go_quote(target)}: {go_transport_error(url, err)}") from None
            healthy = v2_health_result(response.content)
        except HealthCheckFailed as err:
            lines.append(f"failed to check the health of member {member_id} on {url}: {err}")
            continue
        state = "healthy" if healthy else "unhealthy"
        lines.append(f"member {member_id} is {state}: got {state} result from {url}")
        return MemberHealth(tuple(lines), healthy)
    lines.append(f"member {member_id} is unreachable: [{' '.join(member.clientURLs)}] are all unreachable")
    return MemberHealth(tuple(lines), False)


def cluster_verdict(healthy: int, members: int) -> str:
    """v2's last line (its switch tests "all" first, so a cluster of no members is healthy)."""
    if healthy == members:
        return "cluster is healthy"
    if healthy == 0:
        return "cluster is unavailable"
    return "cluster is degraded"


async def _check_round(s: Session, http: httpx.AsyncClient, members: Sequence[rpc_pb2.Member]) -> bool:
    """One round: the members checked concurrently, printed in list order; True if all are healthy."""
    results = await asyncio.gather(*(check_member(http, m) for m in members))
    for result in results:
        s.out("".join(line + "\n" for line in result.lines))
    healthy = sum(result.healthy for result in results)
    s.out(cluster_verdict(healthy, len(members)) + "\n")
    s.stdout.flush()
    return healthy == len(members)


async def _check_forever(s: Session, http: httpx.AsyncClient, members: Sequence[rpc_pb2.Member]) -> None:
    """v2's ``--forever``: a round every 10 s until SIGINT, which ends the command with status 0."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    loop.add_signal_handler(signal.SIGINT, task.cancel)
    try:
        while True:
            await _check_round(s, http, members)
            s.out(f"\nnext check after {FOREVER_INTERVAL:.0f} second...\n\n")
            s.stdout.flush()
            await asyncio.sleep(FOREVER_INTERVAL)
    except asyncio.CancelledError:
        task.uncancel()
    finally:
        loop.remove_signal_handler(signal.SIGINT)


def _fail(s: Session, err: object) -> NoReturn:
    """v2's handleError: ``Error:  <err>`` (two spaces: Go's Println of two operands) and code 4."""
    s.stdout.flush()
    s.err(f"Error:  {err}\n")
    raise CtlExit(EXIT_SERVER_ERROR, None)


def _tls_context(s: Session) -> ssl.SSLContext:
    """The TLS settings for https client URLs, from the global flags (v2 had its own names)."""
    cacert, cert, key = (str(s.flag(name)) or None for name in ("cacert", "cert", "key"))
    try:
        context = ssl.create_default_context(cafile=cacert)
        if s.flag("insecure-skip-tls-verify"):
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if cert:
            context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as err:
        _fail(s, err)
    return context


async def _members_and_tls(s: Session) -> tuple[list[rpc_pb2.Member], ssl.SSLContext]:
    """v2's order: the client and its transport (TLS) first, then the member list."""
    async with s.client() as client:
        context = _tls_context(s)
        try:
            response = await client.member_list(timeout=s.seconds("command-timeout"))
        except CtlExit:
            raise
        except Exception as err:  # v2 reports any failure to list the members alike
            s.out("cluster may be unhealthy: failed to list members\n")
            _fail(s, err)
    return list(response.members), context


async def run_cluster_health(s: Session) -> None:
    import httpx  # only this command speaks HTTP: keep it off every other command's start-up

    members, context = await _members_and_tls(s)
    timeout = httpx.Timeout(s.seconds("command-timeout"), connect=s.seconds("dial-timeout"))
    async with httpx.AsyncClient(
        verify=context, timeout=timeout, trust_env=False, follow_redirects=True
    ) as http:
        if s.flag("forever"):
            await _check_forever(s, http, members)
            return
        if not await _check_round(s, http, members):
            raise CtlExit(EXIT_CLUSTER_NOT_HEALTHY, None)


def cluster_health_command(runner: Runner) -> Command:
    return Command(
        "cluster-health",
        "cluster-health",
        f"Checks the health of the etcd cluster {V2_MARK}",
        flags=CLUSTER_HEALTH_FLAGS,
        run=runner(run_cluster_health),
        exact_name_only=True,
    )
