"""Launch real etcd and Quorum nodes (and the real etcdctl / quorumctl) as child processes for tests.

`EtcdProcess` and `QuorumProcess` share one interface so a test can be parametrized over the node kind:
both get etcd's flags (``--name``, ``--data-dir``, the client and peer URLs, ``--initial-cluster``) on
free loopback ports, start in their own process group with stdout+stderr captured to a log file, and are
"ready" when the log says "ready to serve client requests" or a linearizable Range over gRPC succeeds.
A node can be killed (SIGKILL by default), terminated, and restarted on the same data dir and ports.

Invariant: every process started here is reaped by `kill`/`terminate`/`close`, and `close` also removes
the private work dir holding the log and, unless the caller supplied one, the data dir.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import grpc

from cluster.testing import ctlfork
from cluster.testing.ports import LOOPBACK, free_port
from cluster.testing.rawkv import RawKV

READY_LOG_LINE = "ready to serve client requests"
REPO_ROOT = Path(__file__).resolve().parents[2]

# Fast elections on loopback: a single node becomes leader within ~0.1-0.2 s instead of ~1-2 s.
FAST_ELECTION_FLAGS: tuple[str, ...] = ("--heartbeat-interval=10", "--election-timeout=100")


class NodeStartError(RuntimeError):
    """The node exited or did not become ready in time; the message carries the tail of its log."""


def _executable(name_or_path: str) -> str | None:
    return shutil.which(name_or_path)


def etcd_binary() -> str | None:
    """Path of the real etcd 3.4 server ($ETCD_BIN overrides the PATH lookup)."""
    return _executable(os.environ.get("ETCD_BIN") or "etcd")


def etcdctl_binary() -> str | None:
    """Path of the real etcdctl 3.4 ($ETCDCTL_BIN overrides the PATH lookup)."""
    return _executable(os.environ.get("ETCDCTL_BIN") or "etcdctl")


def quorum_available() -> bool:
    """True if the Quorum node entry point (`cluster.server.main`) is importable."""
    try:
        return importlib.util.find_spec("cluster.server.main") is not None
    except ImportError:
        return False


def quorumctl_available() -> bool:
    """True if `python -m cluster.ctl` exists and answers `version` (it is being written alongside)."""
    try:
        if importlib.util.find_spec("cluster.ctl.__main__") is None:
            return False
    except ImportError:
        return False
    try:
        done = subprocess.run(
            [sys.executable, "-m", "cluster.ctl", "version"],
            capture_output=True,
            timeout=30,
            env=_python_env(None),
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


def _python_env(base: Mapping[str, str] | None) -> dict[str, str]:
    """``base`` (default: our environment) with this checkout first on PYTHONPATH, so a child Python
    imports it even when the project is not installed."""
    env = dict(os.environ if base is None else base)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + path if path else "")
    return env


def _ctl_env(extra: Mapping[str, str] | None) -> dict[str, str]:
    """An environment with no stray ETCDCTL_* settings from the caller's shell, API v3 forced."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    env["ETCDCTL_API"] = "3"
    if extra:
        env.update(extra)
    return env


def etcdctl(
    endpoint: str,
    *args: str,
    input: str | bytes | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 30.0,
    binary: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the real etcdctl against ``endpoint`` ("host:port" or URL) and capture its text output."""
    exe = binary or etcdctl_binary()
    if exe is None:
        raise FileNotFoundError("etcdctl not found (install etcd-client or set ETCDCTL_BIN)")
    return _run_ctl([exe, f"--endpoints={endpoint}", *args], input, _ctl_env(env), timeout)


def quorumctl(
    endpoint: str,
    *args: str,
    input: str | bytes | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> subprocess.CompletedProcess[str]:
    """Run `python -m cluster.ctl` (quorumctl) exactly as `etcdctl` would be run."""
    cmd = [sys.executable, "-m", "cluster.ctl", f"--endpoints={endpoint}", *args]
    return _run_ctl(cmd, input, _python_env(_ctl_env(env)), timeout)


def _run_ctl(
    cmd: list[str], input_: str | bytes | None, env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess[str]:
    data = input_.encode() if isinstance(input_, str) else input_
    done = ctlfork.run(cmd, input=data, env=env, timeout=timeout)
    return subprocess.CompletedProcess(
        done.args,
        done.returncode,
        done.stdout.decode("utf-8", "surrogateescape"),
        done.stderr.decode("utf-8", "surrogateescape"),
    )


class NodeProcess:
    """One member on loopback (a single-member cluster by default); subclasses say which program to run."""

    kind = "node"

    def __init__(
        self,
        name: str = "default",
        data_dir: str | os.PathLike[str] | None = None,
        host: str = LOOPBACK,
        client_port: int | None = None,
        peer_port: int | None = None,
        flags: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.host = host
        # Logs (and the data dir unless one is given) live in a private work dir removed by close().
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{self.kind}-{name}-"))
        self.data_dir = Path(data_dir) if data_dir is not None else self.workdir / "data"
        self.log_path = self.workdir / f"{name}.log"
        self.client_port = client_port or free_port(host)
        self.peer_port = peer_port or free_port(host)
        self.flags = list(flags)
        self.env = dict(env or {})
        self.scheme = "http"
        """"https" serves clients over TLS (give the --cert-file/--key-file flags too)."""
        self.peer_scheme = "http"
        self.initial_cluster = f"{name}={self.peer_url}"
        """``--initial-cluster``: this node alone unless `cluster_of` (or the caller) sets the members."""
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0
        self.starts = 0

    # -- addresses -------------------------------------------------------------------------------
    @property
    def client_url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.client_port}"

    @property
    def endpoint(self) -> str:
        """``host:port`` as etcdctl's --endpoints and gRPC channels take it."""
        return f"{self.host}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"{self.peer_scheme}://{self.host}:{self.peer_port}"

    def base_flags(self) -> list[str]:
        """The etcd flags every node gets; both kinds take exactly the same ones."""
        return [
            f"--name={self.name}",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={self.client_url}",
            f"--advertise-client-urls={self.client_url}",
            f"--listen-peer-urls={self.peer_url}",
            f"--initial-advertise-peer-urls={self.peer_url}",
            f"--initial-cluster={self.initial_cluster}",
        ]

    def command(self, flags: Sequence[str]) -> list[str]:
        raise NotImplementedError

    def process_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ETCD_", "QUORUM_"))}
        env.update(self.env)
        return env

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self, *extra_flags: str, wait: bool = True, timeout: float = 30.0) -> NodeProcess:
        """Start the node with its flags plus ``extra_flags``; by default wait until it serves."""
        if self.running:
            raise RuntimeError(f"{self} is already running")
        cmd = self.command([*self.base_flags(), *self.flags, *extra_flags])
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== start #{self.starts + 1}: {' '.join(cmd)}\n".encode())
            log.flush()
            self._log_offset = log.tell()
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.process_env(),
                cwd=str(self.workdir),
                start_new_session=True,
            )
        self.starts += 1
        if wait:
            self.wait_ready(timeout)
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Block until the ready log line appears or a linearizable Range succeeds."""
        deadline = time.monotonic() + timeout
        with RawKV(self.endpoint) as kv:
            while True:
                if self.proc is None or self.proc.poll() is not None:
                    code = None if self.proc is None else self.proc.returncode
                    raise NodeStartError(f"{self} exited with {code} while starting\n{self.log_tail()}")
                if READY_LOG_LINE in self.current_log():
                    return
                try:
                    kv.range(b"\x00", timeout=0.5)  # linearizable: there is a leader and it applies
                    return
                except grpc.RpcError:
                    pass
                if time.monotonic() > deadline:
                    self.kill()
                    raise NodeStartError(f"{self} not ready after {timeout}s\n{self.log_tail()}")
                time.sleep(0.05)

    def kill(self, sig: int = signal.SIGKILL, timeout: float = 10.0) -> int | None:
        """Send ``sig`` to the node's process group and reap it; returns its exit code."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout)
        self._reap_group(proc.pid)
        return proc.returncode

    def terminate(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL if the node has not exited after ``timeout`` seconds."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                return self.kill()
        self._reap_group(proc.pid)
        return proc.returncode

    @staticmethod
    def _reap_group(pgid: int) -> None:
        # Children the node may have spawned in its own session die with it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)

    def restart(self, *extra_flags: str, sig: int | None = None, timeout: float = 30.0) -> NodeProcess:
        """Stop (SIGTERM, or ``sig``) if running, then start again on the same data dir and ports."""
        if self.running:
            if sig is None:
                self.terminate()
            else:
                self.kill(sig)
        return self.start(*extra_flags, timeout=timeout)

    def close(self) -> None:
        """Kill the node and remove the directories it created for itself."""
        self.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> NodeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- logs ------------------------------------------------------------------------------------
    def logs(self) -> str:
        """Everything the node wrote to stdout/stderr, across restarts."""
        try:
            return self.log_path.read_text("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def current_log(self) -> str:
        """What the current (latest) start wrote."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_offset)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.logs().splitlines()[-lines:])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.endpoint}, data_dir={str(self.data_dir)!r})"


class EtcdProcess(NodeProcess):
    """The real etcd 3.4 server."""

    kind = "etcd"

    def __init__(self, *args: object, binary: str | None = None, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        exe = binary or etcd_binary()
        if exe is None:
            raise FileNotFoundError("etcd not found (install etcd-server or set ETCD_BIN)")
        self.binary = exe

    def command(self, flags: Sequence[str]) -> list[str]:
        return [self.binary, *flags]


class QuorumProcess(NodeProcess):
    """A Quorum node: `python -m cluster.server.main` with etcd's flags."""

    kind = "quorum"

    def command(self, flags: Sequence[str]) -> list[str]:
        return [sys.executable, "-m", "cluster.server.main", *flags]

    def process_env(self) -> dict[str, str]:
        return _python_env(super().process_env())


NODE_KINDS: dict[str, type[NodeProcess]] = {"etcd": EtcdProcess, "quorum": QuorumProcess}


def make_node(kind: str, **kwargs: object) -> NodeProcess:
    """Construct (not start) a node of ``kind`` ("etcd" or "quorum")."""
    return NODE_KINDS[kind](**kwargs)  # type: ignore[arg-type]


def cluster_of(kind: str, size: int, flags: Sequence[str] = (), **kwargs: object) -> list[NodeProcess]:
    """``size`` members named m1..mN that know each other (not started: start them all, then wait).

    Example: ``nodes = cluster_of("etcd", 3); [n.start(wait=False) for n in nodes];
    [n.wait_ready() for n in nodes]``.
    """
    nodes = [make_node(kind, name=f"m{i + 1}", flags=flags, **kwargs) for i in range(size)]
    members = ",".join(f"{n.name}={n.peer_url}" for n in nodes)
    for node in nodes:
        node.initial_cluster = members
    return nodes
