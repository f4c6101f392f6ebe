"""``snapshot save``, ``status`` and ``restore``, logging as etcdctl's snapshot manager.

``save`` streams a member's backend over gRPC (it works against etcd too). ``status`` and ``restore``
work offline on Quorum snapshot files (an LMDB database plus its SHA-256; ``cluster.snapshot``), so
like etcdctl they import the storage layer; they cannot read etcd's bbolt files, nor can etcdctl
read Quorum's.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from cluster.ctl.cobra import Command
from cluster.ctl.exits import EXIT_BAD_ARGS, EXIT_ERROR, EXIT_INTERRUPTED, CtlExit
from cluster.ctl.flags import FlagSpec
from cluster.ctl.goformat import humanize_bytes
from cluster.ctl.printers import SnapshotStatus
from cluster.ctl.session import Runner, Session, zap_string, zap_timestamp

SHA256_SIZE = 32


def _go_path_error(op: str, path: str, err: OSError) -> str:
    reason = os.strerror(err.errno) if err.errno else str(err)
    return f"{op} {path}: {reason[:1].lower()}{reason[1:]}"


RESTORE_FLAGS = (
    FlagSpec("data-dir", "string", "", "Path to the data directory"),
    FlagSpec("initial-advertise-peer-urls", "string", "http://localhost:2380",
             "List of this member's peer URLs to advertise to the rest of the cluster"),
    FlagSpec("initial-cluster", "string", "default=http://localhost:2380",
             "Initial cluster configuration for restore bootstrap"),
    FlagSpec("initial-cluster-token", "string", "etcd-cluster",
             "Initial cluster token for the etcd cluster during restore bootstrap"),
    FlagSpec("name", "string", "default", "Human-readable name for this member"),
    FlagSpec("skip-hash-check", "bool", False,
             "Ignore snapshot integrity hash value (required if copied from data directory)"),
    FlagSpec("wal-dir", "string", "", "Path to the WAL directory (use --data-dir if none given)"),
)  # fmt: skip
STATUS_LONG = (
    "When --write-out is set to simple, this command prints out comma-separated status lists for each "
    "endpoint.\nThe items in the lists are hash, revision, total keys, total size.\n"
)


def _zap_value(value: object) -> str:
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ",".join(zap_string(str(v)) for v in value) + "]"
    return zap_string(str(value))


def _epoch_log(
    s: Session, line: int, msg: str, caller: str = "snapshot/v3_snapshot.go", **fields: object
) -> None:
    """One zap production-logger line (epoch-seconds timestamp) from the snapshot manager."""
    extra = "".join(f",{zap_string(k)}:{_zap_value(v)}" for k, v in fields.items())
    s.err(
        f'{{"level":"info","ts":{time.time()!r},"caller":"{caller}:{line}",'
        f'"msg":{zap_string(msg)}{extra}}}\n'
    )


def _client_log(s: Session, line: int, msg: str) -> None:
    s.err(
        f'{{"level":"info","ts":"{zap_timestamp()}","caller":"clientv3/maintenance.go:{line}","msg":"{msg}"}}\n'
    )


async def run_snapshot_save(s: Session) -> None:
    if len(s.inv.args) != 1:
        raise CtlExit(EXIT_BAD_ARGS, "snapshot save expects one argument")
    path = s.inv.args[0]
    timeout = s.seconds("command-timeout") if "command-timeout" in s.inv.flags.changed else None
    client = s.client()
    try:
        endpoints = [e.raw for e in client.endpoints]
        if len(endpoints) != 1:
            raise CtlExit(
                EXIT_INTERRUPTED,
                f"snapshot must be requested to one selected node, not multiple [{' '.join(endpoints)}]",
            )
        part = path + ".part"
        try:
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        except OSError as err:
            raise CtlExit(
                EXIT_INTERRUPTED, f"could not open {part} ({_go_path_error('open', part, err)})"
            ) from None
        try:
            _epoch_log(s, 119, "created temporary db file", path=part)
            started = time.monotonic()
            size = 0
            stream = client.snapshot(timeout=timeout)
            first = True
            async for chunk in stream:
                if first:
                    _client_log(s, 200, "opened snapshot stream; downloading")
                    _epoch_log(s, 127, "fetching snapshot", endpoint=endpoints[0])
                    first = False
                os.write(fd, chunk)
                size += len(chunk)
            _client_log(s, 208, "completed snapshot read; closing")
            if size % 512 != SHA256_SIZE:
                raise CtlExit(EXIT_INTERRUPTED, f"sha256 checksum not found [bytes: {size}]")
            os.fsync(fd)
        finally:
            os.close(fd)
        _epoch_log(
            s,
            142,
            "fetched snapshot",
            endpoint=endpoints[0],
            size=humanize_bytes(size),
            took=time.monotonic() - started,
        )
        os.replace(part, path)
        _epoch_log(s, 152, "saved", path=path)
    finally:
        if os.path.exists(path + ".part"):
            os.remove(path + ".part")
        await client.close()
    s.out(f"Snapshot saved at {path}\n")


async def run_snapshot_status(s: Session) -> None:
    from cluster.snapshot.file import SnapshotFileError, status

    if len(s.inv.args) != 1:
        raise CtlExit(EXIT_BAD_ARGS, "snapshot status requires exactly one argument")
    printer = s.init_display()
    try:
        ds = status(Path(s.inv.args[0]))
    except SnapshotFileError as err:
        raise CtlExit(EXIT_ERROR, str(err)) from None
    printer.db_status(SnapshotStatus(ds.hash, ds.revision, ds.total_key, ds.total_size))


_EVENT_CALLERS = {
    "restoring snapshot": ("snapshot/v3_snapshot.go", 296),
    "added member": ("membership/cluster.go", 392),
    "restored snapshot": ("snapshot/v3_snapshot.go", 309),
}


async def run_snapshot_restore(s: Session) -> None:
    from cluster.snapshot.file import SnapshotFileError
    from cluster.snapshot.restore import RestoreConfig, restore

    if len(s.inv.args) != 1:
        raise CtlExit(EXIT_BAD_ARGS, "snapshot restore requires exactly one argument")
    flags = s.inv.flags
    name = str(flags.get("name"))
    cfg = RestoreConfig(
        snapshot_path=s.inv.args[0],
        name=name,
        data_dir=str(flags.get("data-dir")) or f"{name}.etcd",
        wal_dir=str(flags.get("wal-dir")),
        peer_urls=str(flags.get("initial-advertise-peer-urls")),
        initial_cluster=str(flags.get("initial-cluster")),
        initial_cluster_token=str(flags.get("initial-cluster-token")),
        skip_hash_check=bool(flags.get("skip-hash-check")),
    )

    def event(msg: str, fields: object) -> None:
        caller, line = _EVENT_CALLERS[msg]
        _epoch_log(s, line, msg, caller, **dict(fields))  # type: ignore[call-overload]

    try:
        restore(cfg, event)
    except SnapshotFileError as err:
        raise CtlExit(EXIT_ERROR, str(err)) from None
    except OSError as err:
        raise CtlExit(EXIT_ERROR, str(err)) from None


def snapshot_commands(runner: Runner) -> list[Command]:
    return [
        Command(
            "save",
            "save <filename>",
            "Stores an etcd node backend snapshot to a given file",
            run=runner(run_snapshot_save),
        ),
        Command(
            "status",
            "status <filename>",
            "Gets backend snapshot status of a given file",
            long=STATUS_LONG,
            run=runner(run_snapshot_status),
        ),
        Command(
            "restore",
            "restore <filename> [options]",
            "Restores an etcd member snapshot to an etcd directory",
            flags=RESTORE_FLAGS,
            run=runner(run_snapshot_restore),
        ),
    ]
