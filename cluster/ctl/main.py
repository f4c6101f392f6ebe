"""quorumctl entry point: etcdctl 3.4's command line, outputs and exit codes."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence
from typing import BinaryIO

from cluster.api.errors import EtcdError
from cluster.client import AuthenticationError, ClientError
from cluster.ctl.cobra import Command, CommandLineError, Invocation, prepare, usage
from cluster.ctl.exits import EXIT_BAD_CONNECTION, EXIT_ERROR, CtlExit, GoPanic
from cluster.ctl.session import Session, default_streams
from cluster.ctl.tree import build_tree


def _help_command(root: Command, args: list[str], stdout: BinaryIO, stderr: BinaryIO) -> None:
    command = root
    for word in args:
        child = command.find_child(word)
        if child is None:
            stderr.write(f"Unknown help topic [`{' '.join(args)}`]\n".encode())
            stdout.write(usage(root, with_help_flag=False).encode())
            return
        command = child
    stdout.write(usage(command).encode())


def run(
    argv: Sequence[str],
    stdin: BinaryIO,
    stdout: BinaryIO,
    stderr: BinaryIO,
    environ: dict[str, str] | None = None,
) -> int:
    """Run one command line; returns the exit status."""
    env = dict(os.environ if environ is None else environ)
    api = env.pop("ETCDCTL_API", "")
    if api not in ("", "3"):
        stderr.write(f"unsupported API version {api}\n".encode())
        return EXIT_ERROR

    def make_session(inv: Invocation) -> Session:
        return Session(inv, stdin, stdout, stderr, env)

    root = build_tree(make_session)
    try:
        prepared = prepare(root, list(argv))
    except CommandLineError as err:
        message = str(err)
        if err.kind == "find":
            stderr.write(f"Error: {message}\nRun '{err.command.path()} --help' for usage.\n".encode())
        else:
            stderr.write(f"Error: {message}\n".encode())
            stdout.write(usage(err.command).encode())
            stdout.flush()
            stderr.write(b"\n")
        stderr.write(f"Error: {message}\n".encode())
        return EXIT_ERROR
    if isinstance(prepared, Command):
        stdout.write(usage(prepared).encode())
        return 0
    if prepared.command.name == "help" and prepared.command.parent is root:
        _help_command(root, prepared.args, stdout, stderr)
        return 0
    try:
        assert prepared.command.run is not None
        prepared.command.run(prepared)
    except CtlExit as exit_:
        stdout.flush()
        if exit_.message is not None:
            stderr.write(f"Error: {exit_.message}\n".encode())
        return exit_.code
    except AuthenticationError as err:
        stdout.flush()
        stderr.write(f"Error: {err}\n".encode())
        return EXIT_BAD_CONNECTION
    except (EtcdError, ClientError) as err:
        stdout.flush()
        stderr.write(f"Error: {err}\n".encode())
        return EXIT_ERROR
    except GoPanic as panic:
        stdout.flush()
        stderr.write(f"panic: {panic}\n".encode())
        return 2
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    # A Go program without a handler dies of SIGINT; so does etcdctl (no KeyboardInterrupt trace).
    # Commands that react to it (lock, elect) install their own handler while they run.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    stdin, stdout, stderr = default_streams()
    code = run(sys.argv[1:] if argv is None else argv, stdin, stdout, stderr)
    stdout.flush()
    stderr.flush()
    sys.exit(code)


if __name__ == "__main__":
    main()
