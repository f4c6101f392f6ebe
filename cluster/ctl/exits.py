"""etcdctl's exit codes and the exception that carries one with its message."""

from __future__ import annotations

EXIT_SUCCESS = 0
EXIT_ERROR = 1
EXIT_BAD_CONNECTION = 2
EXIT_INVALID_INPUT = 3
EXIT_BAD_FEATURE = 4
EXIT_INTERRUPTED = 5
EXIT_IO = 6
EXIT_BAD_ARGS = 128


class CtlExit(Exception):
    """Stop the command: print ``Error: <message>`` on stderr (unless message is None) and exit."""

    def __init__(self, code: int, message: str | None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class GoPanic(Exception):
    """etcdctl would panic here (a Go runtime panic: the message on stderr, exit status 2)."""
