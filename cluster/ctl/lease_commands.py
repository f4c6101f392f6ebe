"""lease grant, revoke, timetolive, list and keep-alive, as etcdctl 3.4 runs them."""

from __future__ import annotations

from cluster.api.gen.etcdserverpb import rpc_pb2
from cluster.client import AuthenticationError
from cluster.ctl.cobra import Command
from cluster.ctl.exits import EXIT_BAD_ARGS, EXIT_BAD_CONNECTION, EXIT_ERROR, CtlExit
from cluster.ctl.flags import FlagSpec, parse_go_int
from cluster.ctl.lease_output import (
    print_grant,
    print_keep_alive,
    print_leases,
    print_revoke,
    print_time_to_live,
)
from cluster.ctl.printers import SimplePrinter
from cluster.ctl.session import Runner, Session

TIMETOLIVE_FLAGS = (FlagSpec("keys", "bool", False, "Get keys attached to this lease"),)
KEEPALIVE_FLAGS = (
    FlagSpec("once", "bool", False, "Resets the keep-alive time to its original value and exits immediately"),
)


def lease_from_arg(text: str) -> int:
    try:
        return parse_go_int(text, 16)
    except ValueError as err:
        raise CtlExit(EXIT_BAD_ARGS, f"bad lease ID arg ({err}), expecting ID in Hex") from None


async def run_grant(s: Session) -> None:
    if len(s.inv.args) != 1:
        raise CtlExit(EXIT_BAD_ARGS, "lease grant command needs TTL argument")
    try:
        ttl = parse_go_int(s.inv.args[0], 10)
    except ValueError as err:
        raise CtlExit(EXIT_BAD_ARGS, f"bad TTL ({err})") from None
    async with s.client() as client:
        try:
            response = await client.lease_grant(
                rpc_pb2.LeaseGrantRequest(TTL=ttl), timeout=s.seconds("command-timeout")
            )
        except AuthenticationError:
            raise
        except Exception as err:
            raise CtlExit(EXIT_ERROR, f"failed to grant lease ({err})") from None
    assert s.printer is not None
    print_grant(s.printer, response)


async def run_revoke(s: Session) -> None:
    if len(s.inv.args) != 1:
        raise CtlExit(EXIT_BAD_ARGS, "lease revoke command needs 1 argument")
    lease_id = lease_from_arg(s.inv.args[0])
    async with s.client() as client:
        try:
            response = await client.lease_revoke(
                rpc_pb2.LeaseRevokeRequest(ID=lease_id), timeout=s.seconds("command-timeout")
            )
        except AuthenticationError:
            raise
        except Exception as err:
            raise CtlExit(EXIT_ERROR, f"failed to revoke lease ({err})") from None
    assert s.printer is not None
    print_revoke(s.printer, lease_id, response)


async def run_time_to_live(s: Session) -> None:
    if len(s.inv.args) != 1:
        raise CtlExit(EXIT_BAD_ARGS, "lease timetolive command needs lease ID as argument")
    keys = bool(s.inv.flags.get("keys"))
    request = rpc_pb2.LeaseTimeToLiveRequest(ID=lease_from_arg(s.inv.args[0]), keys=keys)
    async with s.client() as client:
        try:
            response = await client.lease_time_to_live(request)
        except AuthenticationError:
            raise
        except Exception as err:
            raise CtlExit(EXIT_BAD_CONNECTION, str(err)) from None
    assert s.printer is not None
    print_time_to_live(s.printer, response, keys)


async def run_list(s: Session) -> None:
    async with s.client() as client:
        try:
            response = await client.lease_leases()
        except AuthenticationError:
            raise
        except Exception as err:
            raise CtlExit(EXIT_BAD_CONNECTION, str(err)) from None
    assert s.printer is not None
    print_leases(s.printer, response)


async def run_keep_alive(s: Session) -> None:
    if len(s.inv.args) != 1:
        raise CtlExit(EXIT_BAD_ARGS, "lease keep-alive command needs lease ID as argument")
    lease_id = lease_from_arg(s.inv.args[0])
    async with s.client() as client:
        assert s.printer is not None
        if s.inv.flags.get("once"):
            try:
                response = await client.lease_keep_alive_once(lease_id)
            except AuthenticationError:
                raise
            except Exception as err:
                raise CtlExit(EXIT_BAD_CONNECTION, str(err)) from None
            print_keep_alive(s.printer, response)
            return
        try:
            async for response in client.lease_keep_alive(lease_id):
                if response.TTL <= 0:
                    break
                print_keep_alive(s.printer, response)
                s.stdout.flush()
        except AuthenticationError:
            raise
        except Exception as err:
            raise CtlExit(EXIT_BAD_CONNECTION, str(err)) from None
    if isinstance(s.printer, SimplePrinter):
        s.out(f"lease {lease_id:016x} expired or revoked.\n")


def lease_commands(runner: Runner) -> list[Command]:
    return [
        Command("grant", "grant <ttl>", "Creates leases", run=runner(run_grant)),
        Command(
            "keep-alive",
            "keep-alive [options] <leaseID>",
            "Keeps leases alive (renew)",
            flags=KEEPALIVE_FLAGS,
            run=runner(run_keep_alive),
        ),
        Command("list", "list", "List all active leases", run=runner(run_list)),
        Command("revoke", "revoke <leaseID>", "Revokes leases", run=runner(run_revoke)),
        Command(
            "timetolive",
            "timetolive <leaseID> [options]",
            "Get lease information",
            flags=TIMETOLIVE_FLAGS,
            run=runner(run_time_to_live),
        ),
    ]
