"""quorumctl's command tree: etcdctl's commands, the implemented ones runnable.

Commands etcdctl has but quorumctl does not implement yet are present (so help listings, prefix
matching and suggestions match etcdctl) and fail with a clear message when run. quorumctl adds two
etcdctl v2 spellings that runbooks use: ``cluster-health`` and ``member add <name> <peerURL>``; their
help lines end in "(etcdctl v2)".
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from cluster.ctl.auth_commands import auth_commands
from cluster.ctl.check_commands import check_commands
from cluster.ctl.cluster_commands import defrag_and_move_leader, member_commands
from cluster.ctl.cluster_health import cluster_health_command
from cluster.ctl.cobra import Command, Invocation
from cluster.ctl.concurrency_commands import concurrency_commands
from cluster.ctl.exits import EXIT_ERROR, CtlExit
from cluster.ctl.kv_commands import kv_commands
from cluster.ctl.lease_commands import lease_commands
from cluster.ctl.maintenance_commands import maintenance_commands, member_list_command
from cluster.ctl.session import GLOBAL_FLAGS, Handler, Session
from cluster.ctl.snapshot_command import snapshot_commands
from cluster.ctl.watch_command import watch_command

SessionFactory = Callable[[Invocation], Session]

MEMBER_LIST_LONG = (
    "When --write-out is set to simple, this command prints out comma-separated member lists for each "
    "endpoint.\nThe items in the lists are ID, Status, Name, Peer Addrs, Client Addrs, Is Learner.\n"
)

# Commands etcdctl has that quorumctl does not run yet: (path, short description).
NOT_IMPLEMENTED: tuple[tuple[str, str], ...] = (
    ("completion bash", "Generate the autocompletion script for bash"),
    ("completion fish", "Generate the autocompletion script for fish"),
    ("completion powershell", "Generate the autocompletion script for powershell"),
    ("completion zsh", "Generate the autocompletion script for zsh"),
    ("make-mirror", "Makes a mirror at the destination etcd cluster"),
    ("migrate", "Migrates keys in a v2 store to a mvcc store"),
)
GROUPS = {
    "auth": "Enable or disable authentication",
    "check": "commands for checking properties of the etcd cluster",
    "completion": "Generate the autocompletion script for the specified shell",
    "lease": "Lease related commands",
    "member": "Membership related commands",
    "role": "Role related commands",
    "snapshot": "Manages etcd node snapshots",
    "user": "User related commands",
}


def _not_implemented(path: str) -> Callable[[Invocation], object]:
    def run(_: Invocation) -> None:
        raise CtlExit(EXIT_ERROR, f'"{path}" is not implemented by quorumctl yet')

    return run


def build_tree(make_session: SessionFactory) -> Command:
    """The root command; ``make_session`` turns an invocation into a Session for a handler."""

    def runner(handler: Handler) -> Callable[[Invocation], object]:
        def run(inv: Invocation) -> None:
            asyncio.run(handler(make_session(inv)))

        return run

    root = Command("etcdctl", "etcdctl", "A simple command line client for etcd3.", persistent=GLOBAL_FLAGS)
    root.add(*kv_commands(runner), *maintenance_commands(runner), watch_command(runner))
    root.add(*concurrency_commands(runner))
    root.add(*defrag_and_move_leader(runner))
    root.add(cluster_health_command(runner))  # etcdctl v2's; see cluster_health.py
    groups = {name: Command(name, f"{name} <subcommand>", short) for name, short in GROUPS.items()}
    groups["member"].add(member_list_command(runner), *member_commands(runner))
    groups["lease"].add(*lease_commands(runner))
    groups["snapshot"].add(*snapshot_commands(runner))
    groups["check"].add(*check_commands(runner))
    for group, commands in auth_commands(runner).items():
        groups[group].add(*commands)
    next(c for c in groups["member"].children if c.name == "list").long = MEMBER_LIST_LONG
    for path, short in NOT_IMPLEMENTED:
        parent_name, _, name = path.rpartition(" ")
        command = Command(name, name, short, run=_not_implemented(path))
        if parent_name:
            groups[parent_name].add(command)
        else:
            root.add(command)
    root.add(*groups.values())
    root.add(Command("help", "help [command]", "Help about any command", run=lambda _: None))
    return root
