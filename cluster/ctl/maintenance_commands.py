"""endpoint health/status/hashkv, alarm list/disarm, member list and version, as etcdctl 3.4."""

from __future__ import annotations

import asyncio
import time

from cluster.api import errors as etcd_errors
from cluster.api.gen.etcdserverpb import rpc_pb2
from cluster.client import AuthenticationError
from cluster.ctl.cobra import API_VERSION, ETCD_VERSION, Command
from cluster.ctl.durations import format_duration
from cluster.ctl.exits import EXIT_BAD_ARGS, EXIT_ERROR, CtlExit
from cluster.ctl.flags import FlagSpec
from cluster.ctl.printers import EndpointHashKV, EndpointHealth, EndpointStatus
from cluster.ctl.session import Runner, Session

ENDPOINT_FLAGS = (FlagSpec("cluster", "bool", False, "use all endpoints from the cluster member list"),)
HASHKV_FLAGS = (FlagSpec("rev", "int64", 0, "maximum revision to hash (default: all revisions)"),)
STATUS_LONG = (
    "When --write-out is set to simple, this command prints out comma-separated status lists for each "
    "endpoint.\nThe items in the lists are endpoint, ID, version, db size, is leader, is learner, raft term, "
    "raft index, raft applied index, errors.\n"
)


async def endpoints_from_cluster(s: Session) -> list[str]:
    """``--endpoints`` as given, or with ``--cluster`` every member's client URLs."""
    if not s.inv.flags.get("cluster"):
        value = s.inv.flags.get("endpoints")
        assert isinstance(value, list)
        return list(value)
    async with s.new_client(s.endpoints(), s.tls(), None, None) as client:
        try:
            members = await client.member_list(timeout=s.seconds("command-timeout"))
        except AuthenticationError:
            raise
        except Exception as err:
            raise CtlExit(
                EXIT_ERROR, f"failed to fetch endpoints from etcd cluster member list: {err}"
            ) from None
    return [url for m in members.members for url in m.clientURLs]


async def _check_health(s: Session, endpoint: str, user: str | None, password: str | None) -> EndpointHealth:
    client = s.new_client([endpoint], s.tls(), user, password)
    try:
        started = time.perf_counter_ns()
        try:
            await client.range(rpc_pb2.RangeRequest(key=b"health"), timeout=s.seconds("command-timeout"))
            error = ""
        except etcd_errors.PERMISSION_DENIED:
            error = ""
        except Exception as err:
            error = str(err)
        took = format_duration(time.perf_counter_ns() - started)
    finally:
        await client.close()
    return EndpointHealth(endpoint, not error, took, error)


async def run_endpoint_health(s: Session) -> None:
    s.apply_env()
    printer = s.init_display()
    s.tls()
    user, password = s.credentials()
    endpoints = await endpoints_from_cluster(s)
    results: list[EndpointHealth] = []
    tasks = [asyncio.ensure_future(_check_health(s, ep, user, password)) for ep in endpoints]
    for finished in asyncio.as_completed(tasks):
        results.append(await finished)
    printer.endpoint_health(results)
    if any(r.error for r in results):
        raise CtlExit(EXIT_ERROR, "unhealthy cluster")


async def run_endpoint_status(s: Session) -> None:
    failed = False
    async with s.client() as client:
        items: list[EndpointStatus] = []
        for endpoint in await endpoints_from_cluster(s):
            try:
                response = await client.status(endpoint=endpoint, timeout=s.seconds("command-timeout"))
            except AuthenticationError:
                raise
            except Exception as err:
                failed = True
                s.err(f"Failed to get the status of endpoint {endpoint} ({err})\n")
                continue
            items.append(EndpointStatus(endpoint, response))
    assert s.printer is not None
    s.printer.endpoint_status(items)
    if failed:
        raise CtlExit(EXIT_ERROR, None)


async def run_endpoint_hashkv(s: Session) -> None:
    last_error: Exception | None = None
    revision = int(s.inv.flags.get("rev"))  # type: ignore[call-overload]
    async with s.client() as client:
        items: list[EndpointHashKV] = []
        for endpoint in await endpoints_from_cluster(s):
            try:
                response = await client.hash_kv(
                    revision, endpoint=endpoint, timeout=s.seconds("command-timeout")
                )
            except AuthenticationError:
                raise
            except Exception as err:
                last_error = err
                s.err(f"Failed to get the hash of endpoint {endpoint} ({err})\n")
                continue
            items.append(EndpointHashKV(endpoint, response))
    assert s.printer is not None
    s.printer.endpoint_hashkv(items)
    if last_error is not None:
        raise CtlExit(EXIT_ERROR, str(last_error))


async def run_alarm_list(s: Session) -> None:
    if s.inv.args:
        raise CtlExit(EXIT_BAD_ARGS, "alarm list command accepts no arguments")
    async with s.client() as client:
        response = await client.alarm_list(timeout=s.seconds("command-timeout"))
    assert s.printer is not None
    s.printer.alarm(response)


async def run_alarm_disarm(s: Session) -> None:
    """Disarm every alarm: list them, then deactivate each (the combined response has no header)."""
    if s.inv.args:
        raise CtlExit(EXIT_BAD_ARGS, "alarm disarm command accepts no arguments")
    timeout = s.seconds("command-timeout")
    combined = rpc_pb2.AlarmResponse()
    async with s.client() as client:
        listed = await client.alarm_list(timeout=timeout)
        for member in listed.alarms:
            request = rpc_pb2.AlarmRequest(
                action=rpc_pb2.AlarmRequest.DEACTIVATE, memberID=member.memberID, alarm=member.alarm
            )
            response = await client.alarm(request, timeout=timeout)
            combined.alarms.extend(response.alarms)
    assert s.printer is not None
    s.printer.alarm(combined)


async def run_member_list(s: Session) -> None:
    async with s.client() as client:
        response = await client.member_list(timeout=s.seconds("command-timeout"))
    assert s.printer is not None
    s.printer.member_list(response)


async def run_version(s: Session) -> None:
    s.out(f"etcdctl version: {ETCD_VERSION}\nAPI version: {API_VERSION}\n")


def maintenance_commands(runner: Runner) -> list[Command]:
    endpoint = Command(
        "endpoint", "endpoint <subcommand>", "Endpoint related commands", persistent=ENDPOINT_FLAGS
    )
    endpoint.add(
        Command(
            "health",
            "health",
            "Checks the healthiness of endpoints specified in `--endpoints` flag",
            run=runner(run_endpoint_health),
        ),
        Command(
            "status",
            "status",
            "Prints out the status of endpoints specified in `--endpoints` flag",
            long=STATUS_LONG,
            run=runner(run_endpoint_status),
        ),
        Command(
            "hashkv",
            "hashkv",
            "Prints the KV history hash for each endpoint in --endpoints",
            persistent=HASHKV_FLAGS,
            run=runner(run_endpoint_hashkv),
        ),
    )
    alarm = Command("alarm", "alarm <subcommand>", "Alarm related commands")
    alarm.add(
        Command("disarm", "disarm", "Disarms all alarms", run=runner(run_alarm_disarm)),
        Command("list", "list", "Lists all alarms", run=runner(run_alarm_list)),
    )
    version = Command("version", "version", "Prints the version of etcdctl", run=runner(run_version))
    return [endpoint, alarm, version]


def member_list_command(runner: Runner) -> Command:
    return Command("list", "list", "Lists all members in the cluster", run=runner(run_member_list))
