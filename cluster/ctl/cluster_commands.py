"""member add/remove/update/promote, defrag and move-leader, as etcdctl 3.4 runs them."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

from cluster.api.gen.etcdserverpb import rpc_pb2
from cluster.client import AuthenticationError
from cluster.ctl.cobra import Command
from cluster.ctl.exits import EXIT_BAD_ARGS, EXIT_ERROR, CtlExit, GoPanic
from cluster.ctl.flags import FlagSpec
from cluster.ctl.goformat import go_quote, message_json
from cluster.ctl.maintenance_commands import ENDPOINT_FLAGS, endpoints_from_cluster
from cluster.ctl.printers import Printer, SimplePrinter
from cluster.ctl.session import Runner, Session

MEMBER_ADD_FLAGS = (
    FlagSpec("peer-urls", "string", "", "comma separated peer URLs for the new member."),
    FlagSpec("learner", "bool", False, "indicates if the new member is raft learner"),
)
MEMBER_UPDATE_FLAGS = (
    FlagSpec("peer-urls", "string", "", "comma separated peer URLs for the updated member."),
)
DEFRAG_FLAGS = (
    FlagSpec(
        "data-dir", "string", "", "Optional. If present, defragments a data directory not in use by etcd."
    ),
)
PROMOTE_LONG = "Promotes a non-voting learner member to a voting one in the cluster.\n"
V2_MARK = "(etcdctl v2)"
"""Ends the help line of every etcdctl v2 spelling quorumctl takes (tests compare help without them)."""


def validate_urls(urls: list[str]) -> None:
    """etcd's ``types.NewURLs`` checks, with its messages."""
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https", "unix", "unixs"):
            raise CtlExit(EXIT_ERROR, f"URL scheme must be http, https, unix, or unixs: {url}")
        if parts.scheme in ("http", "https") and parts.port is None:
            raise CtlExit(EXIT_ERROR, f'URL address does not have the form "host:port": {url}')
        if parts.path:
            raise CtlExit(EXIT_ERROR, f"URL must not contain a path: {url}")


def _member_id(args: list[str]) -> int:
    if len(args) != 1:
        raise CtlExit(EXIT_BAD_ARGS, "member ID is not provided")
    text = args[0]
    try:
        if not text or any(c not in "0123456789abcdefABCDEF" for c in text):
            raise ValueError
        value = int(text, 16)
        if value >= 1 << 64:
            raise CtlExit(
                EXIT_BAD_ARGS,
                f"bad member ID arg (strconv.ParseUint: parsing {go_quote(text)}: value out of range), "
                "expecting ID in Hex",
            )
    except ValueError:
        raise CtlExit(
            EXIT_BAD_ARGS,
            f"bad member ID arg (strconv.ParseUint: parsing {go_quote(text)}: invalid syntax), "
            "expecting ID in Hex",
        ) from None
    return value


def _print_member_change(printer: Printer, resp: object, sentence: str, promote: bool = False) -> None:
    if isinstance(printer, SimplePrinter):
        printer.write(sentence)
    elif promote:
        raise GoPanic("runtime error: invalid memory address or nil pointer dereference")
    elif printer.name == "json":
        printer.write(message_json(resp) + "\n")  # type: ignore[arg-type]
    elif printer.name == "protobuf":
        printer.write(resp.SerializeToString())  # type: ignore[attr-defined]
    else:
        raise printer.unsupported()


def member_add_target(args: list[str], peer_urls: str) -> tuple[str, str]:
    """The new member's name and comma-separated peer URLs, from ``member add``'s arguments.

    Deliberately unlike etcdctl 3.4, which refuses a second argument ("too many arguments, did you
    mean --peer-urls=..."): quorumctl takes it as the peer URLs, as etcdctl v2's ``member add <name>
    <peerURL>`` did, because operators' runbooks use that spelling. With ``--peer-urls`` also given,
    or more arguments, etcdctl's error stands.
    """
    if not args:
        raise CtlExit(EXIT_BAD_ARGS, "member name not provided")
    if len(args) == 2 and not peer_urls:
        args, peer_urls = args[:1], args[1]
    if len(args) > 1:
        message = "too many arguments"
        for arg in args:
            if arg.lower().startswith("http"):
                message += f", did you mean --peer-urls={arg}"
        raise CtlExit(EXIT_BAD_ARGS, message)
    if not peer_urls:
        raise CtlExit(EXIT_BAD_ARGS, "member peer urls not provided")
    return args[0], peer_urls


async def run_member_add(s: Session) -> None:
    name, peer_urls = member_add_target(s.inv.args, str(s.inv.flags.get("peer-urls")))
    urls = peer_urls.split(",")
    async with s.client() as client:
        validate_urls(urls)
        request = rpc_pb2.MemberAddRequest(peerURLs=urls, isLearner=bool(s.inv.flags.get("learner")))
        resp = await client.member_add(request, timeout=s.seconds("command-timeout"))
    assert s.printer is not None
    header = resp.header
    _print_member_change(
        s.printer, resp, f"Member {resp.member.ID:16x} added to cluster {header.cluster_id:16x}\n"
    )
    if isinstance(s.printer, SimplePrinter):
        conf = [
            f"{name if m.ID == resp.member.ID else m.name}={url}" for m in resp.members for url in m.peerURLs
        ]
        s.out(
            f"\nETCD_NAME={go_quote(name)}\nETCD_INITIAL_CLUSTER={go_quote(','.join(conf))}\n"
            f'ETCD_INITIAL_ADVERTISE_PEER_URLS={go_quote(peer_urls)}\nETCD_INITIAL_CLUSTER_STATE="existing"\n'
        )


async def run_member_remove(s: Session) -> None:
    member_id = _member_id(s.inv.args)
    async with s.client() as client:
        resp = await client.member_remove(member_id, timeout=s.seconds("command-timeout"))
    assert s.printer is not None
    text = f"Member {member_id:16x} removed from cluster {resp.header.cluster_id:16x}\n"
    _print_member_change(s.printer, resp, text)


async def run_member_update(s: Session) -> None:
    member_id = _member_id(s.inv.args)
    peer_urls = str(s.inv.flags.get("peer-urls"))
    if not peer_urls:
        raise CtlExit(EXIT_BAD_ARGS, "member peer urls not provided")
    request = rpc_pb2.MemberUpdateRequest(ID=member_id, peerURLs=peer_urls.split(","))
    async with s.client() as client:
        resp = await client.member_update(request, timeout=s.seconds("command-timeout"))
    assert s.printer is not None
    text = f"Member {member_id:16x} updated in cluster {resp.header.cluster_id:16x}\n"
    _print_member_change(s.printer, resp, text)


async def run_member_promote(s: Session) -> None:
    member_id = _member_id(s.inv.args)
    async with s.client() as client:
        resp = await client.member_promote(member_id, timeout=s.seconds("command-timeout"))
    assert s.printer is not None
    text = f"Member {member_id:16x} promoted in cluster {resp.header.cluster_id:16x}\n"
    _print_member_change(s.printer, resp, text, promote=True)


async def run_defrag(s: Session) -> None:
    if s.inv.flags.get("data-dir"):
        _defrag_data_dir(s, str(s.inv.flags.get("data-dir")))
        return
    failures = 0
    async with s.client() as client:
        for endpoint in await endpoints_from_cluster(s):
            try:
                await client.defragment(endpoint=endpoint, timeout=s.seconds("command-timeout"))
            except AuthenticationError:
                raise
            except Exception as err:
                s.err(f"Failed to defragment etcd member[{endpoint}] ({err})\n")
                failures += 1
            else:
                s.out(f"Finished defragmenting etcd member[{endpoint}]\n")
    if failures:
        raise CtlExit(EXIT_ERROR, None)


def _defrag_data_dir(s: Session, data_dir: str) -> None:
    """Offline defrag of a stopped member's backend, as etcdctl's ``defrag --data-dir`` (which, like
    ``snapshot restore``, works on the server's database directly)."""
    from cluster.storage.backend import defrag_offline

    db = os.path.join(data_dir, "member", "snap", "db")

    def waiting() -> None:
        s.err(f'waiting for etcd to close and release its lock on "{db}". '
              "To defrag a running etcd instance, omit --data-dir.\n")

    try:
        defrag_offline(Path(db), waiting)
    except Exception as err:
        s.err(f"Failed to defragment etcd data[{data_dir}] ({err})\n")
        raise CtlExit(EXIT_ERROR, None) from None


async def run_move_leader(s: Session) -> None:
    if len(s.inv.args) != 1:
        raise CtlExit(EXIT_BAD_ARGS, "move-leader command needs 1 argument")
    text = s.inv.args[0]
    try:
        if not text or any(c not in "0123456789abcdefABCDEF" for c in text):
            raise ValueError
        target = int(text, 16)
    except ValueError:
        raise CtlExit(EXIT_BAD_ARGS, f"strconv.ParseUint: parsing {go_quote(text)}: invalid syntax") from None
    client = s.client()
    endpoints = s.endpoints()
    await client.close()
    timeout = s.seconds("command-timeout")
    for endpoint in endpoints:
        async with s.client([endpoint]) as one:
            status = await one.status(endpoint=endpoint, timeout=timeout)
            if status.header.member_id != status.leader:
                continue
            resp = await one.move_leader(target, timeout=timeout)
            assert s.printer is not None
            if isinstance(s.printer, SimplePrinter):
                s.out(f"Leadership transferred from {status.leader:x} to {target:x}\n")
            elif s.printer.name in ("json", "protobuf"):
                _print_member_change(s.printer, resp, "")
            else:
                raise s.printer.unsupported()
            return
    raise CtlExit(EXIT_BAD_ARGS, f"no leader endpoint given at [{' '.join(endpoints)}]")


def member_commands(runner: Runner) -> list[Command]:
    return [
        Command(
            "add",
            "add <memberName> [options]",
            "Adds a member into the cluster",
            flags=MEMBER_ADD_FLAGS,
            run=runner(run_member_add),
            other_spellings=(("<name> <url>", f"Same as member add <name> --peer-urls=<url> {V2_MARK}"),),
        ),
        Command(
            "promote",
            "promote <memberID>",
            "Promotes a non-voting member in the cluster",
            long=PROMOTE_LONG,
            run=runner(run_member_promote),
        ),
        Command(
            "remove", "remove <memberID>", "Removes a member from the cluster", run=runner(run_member_remove)
        ),
        Command(
            "update",
            "update <memberID> [options]",
            "Updates a member in the cluster",
            flags=MEMBER_UPDATE_FLAGS,
            run=runner(run_member_update),
        ),
    ]


def defrag_and_move_leader(runner: Runner) -> list[Command]:
    return [
        Command(
            "defrag",
            "defrag",
            "Defragments the storage of the etcd members with given endpoints",
            flags=DEFRAG_FLAGS,
            persistent=ENDPOINT_FLAGS,
            run=runner(run_defrag),
        ),
        Command(
            "move-leader",
            "move-leader <transferee-member-id>",
            "Transfers leadership to another etcd cluster member.",
            run=runner(run_move_leader),
        ),
    ]
