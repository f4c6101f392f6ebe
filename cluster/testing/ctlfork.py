"""quorumctl runs for tests without paying Python's start-up on every one.

The conformance tests run quorumctl hundreds of times, and each ``python -m cluster.ctl`` spends about
half a second importing grpc, protobuf and the generated stubs before it does anything — minutes of a
CI run spent on imports. A fork server pays that once: a helper process imports quorumctl's whole
package, then forks one child per command line. Each child is still a separate process with its own
stdin, stdout, stderr, environment, working directory and exit status (the caller's pipes are handed
over with SCM_RIGHTS), and it runs exactly what ``python -m cluster.ctl`` runs; only the imports are
shared. The server never creates a grpc channel or an event loop, so the children fork from a clean
state (grpc's core starts lazily, on the first channel).

``run`` mirrors ``subprocess.run(..., capture_output=True)`` and forks only quorumctl command lines; set
``QUORUM_CTL_FORK=0`` to get plain subprocesses instead (what a user runs).

Wire protocol on the server's Unix socket, one connection per command: the client sends a 4-byte length
and a JSON request (argv, env, cwd) with three descriptors attached (stdin, stdout, stderr); the child
answers with its pid (8 bytes), later with its exit status (4 bytes, signed). A connection that ends
without a status means the child was killed; the caller reports -9, as it is the one that kills.
"""

from __future__ import annotations

import array
import atexit
import importlib
import json
import os
import pkgutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
_HEADER = struct.Struct("!I")
_PID = struct.Struct("!q")
_STATUS = struct.Struct("!i")


def enabled() -> bool:
    """False when the environment asks for plain subprocesses (QUORUM_CTL_FORK=0)."""
    return os.environ.get("QUORUM_CTL_FORK", "1") != "0"


# ---------------------------------------------------------------------------------------------- server


def _preload() -> None:
    """Import every quorumctl module up front, so no child imports anything on its own."""
    import cluster.ctl

    for info in pkgutil.walk_packages(cluster.ctl.__path__, "cluster.ctl."):
        if info.name != "cluster.ctl.__main__":
            importlib.import_module(info.name)


def _exit_status(stop: SystemExit) -> int:
    """What the interpreter would exit with for ``stop`` (sys.exit's rules)."""
    code = stop.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("connection closed mid-message")
        data += chunk
    return data


def _serve_one(conn: socket.socket) -> None:
    """In the forked child: take over the caller's descriptors and run one command line."""
    fds = array.array("i")
    head, ancillary, _, _ = conn.recvmsg(_HEADER.size, socket.CMSG_SPACE(3 * fds.itemsize))
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    (size,) = _HEADER.unpack(head if len(head) == _HEADER.size else head + _recv_exact(conn, 4 - len(head)))
    request = json.loads(_recv_exact(conn, size))
    for target, fd in enumerate(fds[:3]):
        os.dup2(fd, target)
        os.close(fd)
    os.environ.clear()
    os.environ.update(request["env"])
    if request.get("cwd"):
        os.chdir(request["cwd"])
    sys.argv = ["quorumctl", *request["argv"]]
    conn.sendall(_PID.pack(os.getpid()))
    from cluster.ctl.main import main

    try:
        main(request["argv"])
        status = 0
    except SystemExit as stop:
        status = _exit_status(stop)
    except BaseException:
        traceback.print_exc()
        status = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    try:
        conn.sendall(_STATUS.pack(status))
    finally:
        os._exit(status)


def serve(path: str) -> None:
    """Accept command lines on the Unix socket ``path`` until the parent goes away."""
    _preload()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    print("ready", flush=True)
    parent = os.getppid()
    listener.settimeout(1.0)
    while os.getppid() == parent:
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            continue
        conn.settimeout(None)
        if os.fork() == 0:
            listener.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            try:
                _serve_one(conn)
            finally:
                os._exit(1)
        conn.close()


# ---------------------------------------------------------------------------------------------- client


class ForkServer:
    """A running fork server (one per test process, started on first use)."""

    def __init__(self) -> None:
        self._dir = tempfile.mkdtemp(prefix="quorumctl-fork-")
        self.path = os.path.join(self._dir, "socket")
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "cluster.testing.ctlfork", self.path],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            env=env,
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if line.strip() != b"ready":
            self._proc.kill()
            raise RuntimeError(f"quorumctl fork server did not start: {line!r}")

    def alive(self) -> bool:
        return self._proc.poll() is None

    def close(self) -> None:
        self._proc.kill()
        self._proc.wait()
        for name in os.listdir(self._dir):
            os.unlink(os.path.join(self._dir, name))
        os.rmdir(self._dir)

    def run(
        self,
        argv: Sequence[str],
        input: bytes | None,
        env: Mapping[str, str],
        timeout: float | None,
        cwd: str | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        """One command line, as ``subprocess.run(capture_output=True)`` would run it."""
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        in_r, in_w = os.pipe() if input is not None else (os.dup(0), -1)
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.connect(self.path)
            request = json.dumps({"argv": list(argv), "env": dict(env), "cwd": cwd}).encode()
            fds = array.array("i", [in_r, out_w, err_w])
            conn.sendmsg([_HEADER.pack(len(request))], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
            conn.sendall(request)
        finally:
            for fd in (in_r, out_w, err_w):
                os.close(fd)
        output: dict[int, bytes] = {}

        def drain(fd: int) -> None:
            chunks = []
            with os.fdopen(fd, "rb") as pipe:
                while chunk := pipe.read1(65536):
                    chunks.append(chunk)
            output[fd] = b"".join(chunks)

        readers = [threading.Thread(target=drain, args=(fd,), daemon=True) for fd in (out_r, err_r)]
        for reader in readers:
            reader.start()
        if in_w >= 0:
            threading.Thread(target=_feed, args=(in_w, input or b""), daemon=True).start()
        deadline = None if timeout is None else time.monotonic() + timeout
        pid = -1
        try:
            conn.settimeout(timeout)
            (pid,) = _PID.unpack(_recv_exact(conn, _PID.size))
            conn.settimeout(None if deadline is None else max(0.0, deadline - time.monotonic()))
            try:
                (status,) = _STATUS.unpack(_recv_exact(conn, _STATUS.size))
            except ConnectionError:
                status = -signal.SIGKILL
        except TimeoutError:
            if pid > 0:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            for reader in readers:
                reader.join(10)
            raise subprocess.TimeoutExpired(
                list(argv), timeout or 0.0, output.get(out_r, b""), output.get(err_r, b"")
            ) from None
        finally:
            conn.close()
        for reader in readers:
            reader.join()
        return subprocess.CompletedProcess(list(argv), status, output[out_r], output[err_r])


def _feed(fd: int, data: bytes) -> None:
    try:
        with os.fdopen(fd, "wb") as pipe:
            pipe.write(data)
    except BrokenPipeError:
        pass


_server: ForkServer | None = None
_server_lock = threading.Lock()


def _shared_server() -> ForkServer:
    global _server
    with _server_lock:
        if _server is None or not _server.alive():
            _server = ForkServer()
            atexit.register(_server.close)
        return _server


QUORUMCTL = [sys.executable, "-m", "cluster.ctl"]
"""The command that runs quorumctl from this checkout; ``run`` forks lines that start with it."""


def run(
    argv: Sequence[str],
    input: bytes | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    cwd: str | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """``subprocess.run(argv, capture_output=True)``, except that a quorumctl command line (``QUORUMCTL``
    followed by its arguments) is forked from the shared server unless QUORUM_CTL_FORK=0.
    Raises subprocess.TimeoutExpired as subprocess.run does."""
    environ = dict(os.environ if env is None else env)
    if enabled() and list(argv[: len(QUORUMCTL)]) == QUORUMCTL:
        return _shared_server().run(argv[len(QUORUMCTL):], input, environ, timeout, cwd)
    return subprocess.run(
        list(argv), input=input, capture_output=True, env=environ, timeout=timeout, cwd=cwd, check=False
    )


if __name__ == "__main__":
    serve(sys.argv[1])
