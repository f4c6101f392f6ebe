"""Driving etcdctl / quorumctl scripts against a running cluster, and normalising what they print.

A scenario talks to one cluster through one tool (`Ctl`): short commands run to completion, long ones
(watch, lock, elect, keep-alive) run in the background (`Background`) and are stopped with a signal.
Every scenario starts from the cluster's current revision (`base`), so the same scenario can run on a
cluster that has already served other scenarios: `Transcript.normalise` writes revisions relative to
the base and replaces lease ids (``%016x``, ``%x`` in keys, decimal in JSON) by their order of
appearance, cluster/member ids and raft terms by X, and remaining TTLs by "~".
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping
from typing import IO, Any

import grpc

from cluster.api.gen.etcdserverpb import rpc_pb2, rpc_pb2_grpc
from cluster.testing import ctlfork
from cluster.testing.procs import REPO_ROOT, NodeProcess, etcdctl_binary

_HEX = re.compile(r"\b[0-9a-f]{12,16}\b")
_REMAINING = re.compile(r"remaining\(\d+s\)")
_REVISION_TEXT = re.compile(r"(progress notify: |compacted revision )(\d+)")
_KEYS_TEXT = re.compile(r"attached keys\(\[([^\]]*)\]\)")
_REVISION_KEYS = frozenset({"revision", "create_revision", "mod_revision", "compact_revision",
                            "CompactRevision"})
_LEASE_KEYS = frozenset({"lease", "ID", "id"})
_HIDDEN_KEYS = frozenset({"cluster_id", "member_id", "raft_term"})


def current_revision(node: NodeProcess, timeout: float = 15.0) -> int:
    """The cluster's revision, read linearizably through ``node`` (retried through elections)."""
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(node.endpoint) as channel:
        while True:
            try:
                resp = rpc_pb2_grpc.KVStub(channel).Range(rpc_pb2.RangeRequest(key=b"\0"), timeout=5)
                return int(resp.header.revision)
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


def wait_keys(node: NodeProcess, prefix: bytes, count: int, timeout: float = 15.0) -> bool:
    """Wait until ``prefix`` holds ``count`` keys (a waiter has queued up); no revision is spent."""
    end = prefix[:-1] + bytes([prefix[-1] + 1])
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(node.endpoint) as channel:
        stub = rpc_pb2_grpc.KVStub(channel)
        while time.monotonic() < deadline:
            try:
                resp = stub.Range(rpc_pb2.RangeRequest(key=prefix, range_end=end, count_only=True), timeout=5)
                if resp.count >= count:
                    return True
            except grpc.RpcError:
                pass
            time.sleep(0.05)
    return False


def _read_all(file: IO[bytes]) -> str:
    """What was written to ``file`` so far, read without moving its offset.

    The child writes through the same open file (a shared offset): a seek back to 0 while it runs
    would make its next write overwrite the start of its output (seen in CI as an "elect" whose key
    line had become its value line).
    """
    fd = file.fileno()
    return os.pread(fd, os.fstat(fd).st_size, 0).decode("utf-8", "surrogateescape")


class Background:
    """A command running in its own session, output captured to temporary files."""

    def __init__(self, argv: list[str], env: Mapping[str, str], stdin: bool) -> None:
        # Both files live as long as the command object (read after the command ended).
        self._out: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
        self._err: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
        self.proc = subprocess.Popen(
            argv, stdout=self._out, stderr=self._err, env=dict(env), start_new_session=True,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
        )

    def write(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode())
        self.proc.stdin.flush()

    def output(self) -> str:
        return _read_all(self._out)

    def wait_output(self, lines: int, timeout: float = 15.0) -> str:
        """Wait until at least ``lines`` lines were printed (or the command ended)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.output()
            if out.count("\n") >= lines or self.proc.poll() is not None:
                return out
            time.sleep(0.05)
        return self.output()

    def wait_for(self, text: str, timeout: float = 15.0) -> str:
        """Wait until ``text`` was printed (or the command ended)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.output()
            if text in out or self.proc.poll() is not None:
                return out
            time.sleep(0.05)
        return self.output()

    def wait_quiet(self, quiet: float = 1.0, timeout: float = 15.0) -> None:
        """Wait until the output stopped growing for ``quiet`` seconds (or the command ended)."""
        deadline = time.monotonic() + timeout
        size, since = -1, time.monotonic()
        while time.monotonic() < deadline and self.proc.poll() is None:
            now = len(self.output())
            if now != size:
                size, since = now, time.monotonic()
            elif time.monotonic() - since > quiet:
                return
            time.sleep(0.05)

    def finish(self, sig: int | None = None, timeout: float = 15.0) -> tuple[int | None, str, str]:
        """Signal (optionally), wait for the exit; (status, stdout, stderr). Killed if it hangs."""
        if sig is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        return self.proc.returncode, self.output(), _read_all(self._err)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


class Ctl:
    """One tool ("etcdctl" or "quorumctl") talking to a cluster through all its client endpoints."""

    def __init__(self, tool: str, nodes: list[NodeProcess]) -> None:
        self.tool = tool
        self.nodes = nodes
        self.endpoints = ",".join(n.endpoint for n in nodes)
        self._started: list[Background] = []

    def argv(self, args: tuple[str, ...]) -> list[str]:
        if self.tool == "etcdctl":
            exe = etcdctl_binary()
            assert exe is not None
            head = [exe]
        else:
            head = ctlfork.QUORUMCTL
        return [*head, f"--endpoints={self.endpoints}", *args]

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ETCDCTL_", "ETCD_"))}
        env["ETCDCTL_API"] = "3"
        env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.update(extra or {})
        return env

    def run(self, *args: str, input: str | None = None, env: Mapping[str, str] | None = None,
            timeout: float = 30.0) -> tuple[int, str, str]:
        done = ctlfork.run(self.argv(args), input=input.encode() if input is not None else None,
                           env=self.env(env), timeout=timeout)
        return done.returncode, done.stdout.decode(errors="surrogateescape"), done.stderr.decode(
            errors="surrogateescape")

    def start(self, *args: str, env: Mapping[str, str] | None = None, stdin: bool = False) -> Background:
        bg = Background(self.argv(args), self.env(env), stdin)
        self._started.append(bg)
        return bg

    def close(self) -> None:
        for bg in self._started:
            bg.kill()


class Transcript:
    """What a scenario saw, normalised so that runs on different clusters compare equal."""

    def __init__(self, ctl: Ctl, base: int) -> None:
        self.ctl = ctl
        self.base = base
        self.lines: list[str] = []
        self._leases: dict[int, str] = {}

    def note(self, label: str, value: object) -> None:
        self.lines.append(f"{label}: {self.normalise(str(value))}")

    def run(self, *args: str, input: str | None = None, env: Mapping[str, str] | None = None,
            label: str | None = None) -> str:
        """Run a command to completion and record it (under ``label`` when its arguments hold
        absolute revisions)."""
        code, out, err = self.ctl.run(*args, input=input, env=env)
        self.record(label or " ".join(args), code, out, err)
        return out

    def record(self, label: str, code: int | None, out: str, err: str, squeeze: bool = False) -> None:
        """Record a command's result; ``squeeze`` folds repeated lines (periodic output such as
        keep-alive responses, whose count depends on timing)."""
        if squeeze:
            kept = [line for i, line in enumerate(out.splitlines(keepends=True))
                    if i == 0 or line != out.splitlines(keepends=True)[i - 1]]
            out = "".join(kept)
        errors = [line for line in err.splitlines() if not line.startswith("{")]  # no client log lines
        self.lines.append(f"$ {self._text(label)}\nexit {code}\n{self.normalise(out)}--- stderr\n"
                          + self.normalise("\n".join(errors)))

    def lease_name(self, lease: int) -> str:
        return self._leases.setdefault(lease, f"<lease{len(self._leases) + 1}>")

    def normalise(self, text: str) -> str:
        out = []
        for line in text.splitlines(keepends=True):
            stripped = line.strip()
            if stripped.startswith("{") and stripped.endswith("}"):
                try:
                    doc = json.loads(stripped)
                except ValueError:
                    pass
                else:
                    out.append(json.dumps(self._walk(doc), sort_keys=True) + "\n")
                    continue
            out.append(self._text(line))
        return "".join(out)

    def _text(self, text: str) -> str:
        text = _HEX.sub(lambda m: self.lease_name(int(m.group(0), 16)), text)
        text = _REMAINING.sub("remaining(~)", text)
        text = _KEYS_TEXT.sub(lambda m: f"attached keys([{' '.join(sorted(m.group(1).split()))}])", text)
        return _REVISION_TEXT.sub(lambda m: f"{m.group(1)}base+{int(m.group(2)) - self.base}", text)

    def _walk(self, doc: Any, key: str = "") -> Any:
        if isinstance(doc, dict):
            return {k: self._walk(v, k) for k, v in doc.items()}
        if isinstance(doc, list):
            if key == "leases":
                return sorted(json.dumps(self._walk(v)) for v in doc)
            return [self._walk(v, key) for v in doc]
        if key in _HIDDEN_KEYS:
            return "X"
        if key in _REVISION_KEYS and isinstance(doc, int) and doc > 0:
            return f"base+{doc - self.base}"
        if key in _LEASE_KEYS and isinstance(doc, int) and doc > 0:
            return self.lease_name(doc)
        if key in ("key", "value") and isinstance(doc, str):
            return self._text(base64.b64decode(doc).decode("utf-8", "replace"))
        return doc
