"""Running a child command as etcdctl does with Go's os/exec, and describing its failure in Go's words.

etcdctl reports a failed command with the error ``cmd.Run()`` returns: ``exit status 3``,
``signal: killed``, ``exec: "x": executable file not found in $PATH`` (a bare name not on PATH) or
``fork/exec ./x: permission denied`` (a path that cannot be executed). The child inherits standard
output and error; Go appends the extra variables after the inherited environment and, for duplicates,
the last one wins.
"""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import signal
from collections.abc import Mapping, Sequence
from typing import BinaryIO


class ExecError(Exception):
    """The child could not be started or did not exit with status 0; str() is Go's text."""


def _os_error_text(err: OSError) -> str:
    text = os.strerror(err.errno or errno.EIO)
    return text[:1].lower() + text[1:]


def _signal_text(signum: int) -> str:
    name = signal.strsignal(signum) or f"signal {signum}"
    return name[:1].lower() + name[1:]


def _resolve(name: str, environ: Mapping[str, str]) -> str:
    if os.sep in name:
        return name
    found = shutil.which(name, path=environ.get("PATH", os.defpath))
    if found is None:
        raise ExecError(f'exec: "{name}": executable file not found in $PATH')
    return found


async def run_command(
    argv: Sequence[str], environ: Mapping[str, str], stdout: BinaryIO, stderr: BinaryIO
) -> None:
    """Run ``argv`` to completion with ``environ``; raise ExecError as Go's ``cmd.Run`` would fail."""
    path = _resolve(argv[0], environ)
    for stream in (stdout, stderr):
        stream.flush()
    try:
        out_fd, err_fd = stdout.fileno(), stderr.fileno()
    except (OSError, ValueError, AttributeError):
        out_fd = err_fd = -1
    piped = out_fd < 0
    try:
        proc = await asyncio.create_subprocess_exec(
            path, *argv[1:], env=dict(environ),
            stdout=asyncio.subprocess.PIPE if piped else out_fd,
            stderr=asyncio.subprocess.PIPE if piped else err_fd,
        )
    except OSError as err:
        raise ExecError(f"fork/exec {path}: {_os_error_text(err)}") from None
    if piped:
        out, err_out = await proc.communicate()
        stdout.write(out)
        stderr.write(err_out)
    code = await proc.wait()
    if code < 0:
        raise ExecError(f"signal: {_signal_text(-code)}")
    if code > 0:
        raise ExecError(f"exit status {code}")


def child_environ(
    inherited: Mapping[str, str], extra: Sequence[tuple[str, str]], first: bool
) -> dict[str, str]:
    """Go's ``cmd.Env``: ``extra`` before (``first``) or after the inherited variables; the last
    occurrence of a name wins."""
    env: dict[str, str] = {}
    pairs = [*extra, *inherited.items()] if first else [*inherited.items(), *extra]
    for name, value in pairs:
        env.pop(name, None)
        env[name] = value
    return env
