"""``snapshot save``: stream a member's backend to a file, logging as etcdctl's snapshot manager.

``snapshot status`` and ``snapshot restore`` read and rewrite bbolt files offline; they are not
implemented.
"""

from __future__ import annotations

import os
import time

from cluster.ctl.cobra import Command
from cluster.ctl.exits import EXIT_BAD_ARGS, EXIT_INTERRUPTED, CtlExit
from cluster.ctl.goformat import humanize_bytes
from cluster.ctl.session import Runner, Session, zap_string, zap_timestamp

SHA256_SIZE = 32


def _go_path_error(op: str, path: str, err: OSError) -> str:
    reason = os.strerror(err.errno) if err.errno else str(err)
    return f"{op} {path}: {reason[:1].lower()}{reason[1:]}"


def _epoch_log(s: Session, line: int, msg: str, **fields: object) -> None:
    """One zap production-logger line (epoch-seconds timestamp) from the snapshot manager."""
    extra = "".join(
        f",{zap_string(k)}:{repr(v) if isinstance(v, float) else zap_string(str(v))}"
        for k, v in fields.items()
    )
    s.err(
        f'{{"level":"info","ts":{time.time()!r},"caller":"snapshot/v3_snapshot.go:{line}",'
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


def snapshot_save_command(runner: Runner) -> Command:
    return Command(
        "save",
        "save <filename>",
        "Stores an etcd node backend snapshot to a given file",
        run=runner(run_snapshot_save),
    )
