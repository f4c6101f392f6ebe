"""The real `etcdctl watch` prints the same against Quorum as against real etcd.

Each case runs on a fresh node (so revisions are determined by the writes alone): `setup` commands,
then `etcdctl watch ...` in the background, then `live` commands; the watch is stopped once its output
has been quiet for a while (or it exits by itself, as on a compacted revision). Output is compared after
the same normalisation as the KV cases (cluster/member ids and raft term only). The "etcd" subject runs
every case on two etcd nodes, proving the comparison is stable. A watch that replays history answers in
one response per catch-up pass on both servers; live writes are made one etcdctl process at a time, so
each arrives as its own response.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from cluster.testing.procs import NodeProcess, etcdctl, etcdctl_binary
from tests.conformance.test_kv_etcdctl import normalise

SETTLE_S = 1.0
"""How long a watch has to connect before live writes, and to stay quiet before it is stopped."""


@dataclass(frozen=True, slots=True)
class WatchCase:
    name: str
    setup: tuple[str, ...]
    watch: str
    live: tuple[str, ...] = ()
    modes: tuple[str, ...] = ("simple", "json")


ABC = ("put a/1 one", "put a/2 two", "put b/1 bee", "put a/1 uno", "del a/2")
FOO = ("put foo bar", "put foo baz", "put other x", "del foo")
CASES = (
    WatchCase("key_from_revision", FOO, "watch foo --rev 2"),
    WatchCase("prefix_from_revision_prev_kv", ABC, "watch --prefix a/ --rev 2 --prev-kv"),
    WatchCase("range_from_revision", ABC, "watch a/1 b/1 --rev 1"),
    WatchCase("all_keys_from_revision", ABC, "watch --prefix '' --rev 3"),
    WatchCase("future_revision_then_live", ("put k 1",), "watch k --rev 4",
              ("put k 2", "put k 3", "put k 4")),
    WatchCase("live_key_prev_kv", ("put k 1",), "watch k --prev-kv",
              ("put k 2", "put x 1", "del k", "put k 3")),
    WatchCase("live_prefix", (), "watch --prefix p", ("put p1 a", "put q b", "put p2 c", "del p --prefix")),
    WatchCase("txn_events_in_one_response", ("put t0 x",), "watch --prefix t --rev 2", ("txn",)),
    WatchCase("compacted_revision_cancels", ("put c 1", "put c 2", "put c 3", "compact 3"),
              "watch c --rev 2"),
)
TXN_INPUT = "\nput t1 one\nput t2 two\ndel t0\n\n\n"


def _ctl(node: NodeProcess, command: str) -> str:
    args = shlex.split(command)
    done = etcdctl(node.endpoint, *args, input=TXN_INPUT if args == ["txn"] else None)
    return f"$ {command}\nexit {done.returncode}\n{done.stdout}{done.stderr}"


def _watch_output(node: NodeProcess, case: WatchCase, mode: str) -> str:
    exe = etcdctl_binary()
    assert exe is not None
    args = [exe, f"--endpoints={node.endpoint}", *shlex.split(case.watch)]
    if mode == "json":
        args += ["-w", "json"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")} | {"ETCDCTL_API": "3"}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(args, stdout=out, stderr=err, env=env, start_new_session=True)
        try:
            time.sleep(SETTLE_S)
            transcript = [_ctl(node, c) for c in case.live]
            size, quiet_since = -1, time.monotonic()
            deadline = time.monotonic() + 20
            while proc.poll() is None and time.monotonic() < deadline:
                now_size = os.fstat(out.fileno()).st_size
                if now_size != size:
                    size, quiet_since = now_size, time.monotonic()
                elif time.monotonic() - quiet_since > SETTLE_S:
                    break
                time.sleep(0.1)
            code = proc.poll()
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(10)
        out.seek(0)
        err.seek(0)
        watched = out.read().decode(errors="surrogateescape")
        errors = err.read().decode(errors="surrogateescape")
    return "\n".join(transcript) + f"\n--- watch (exit {code})\n{watched}--- stderr\n{errors}"


def run_case(factory: Callable[..., NodeProcess], kind: str, case: WatchCase, mode: str) -> str:
    node = factory(kind)
    try:
        setup = [_ctl(node, c) for c in case.setup]
        return normalise("\n".join(setup) + "\n" + _watch_output(node, case, mode), node)
    finally:
        node.close()


@pytest.mark.etcd
# etcd-vs-etcd validates the comparison itself (slow tier, like test_kv_etcdctl's).
@pytest.mark.parametrize("subject", [pytest.param("etcd", marks=pytest.mark.slow), "quorum"])
@pytest.mark.parametrize(
    ("case", "mode"),
    [(c, m) for c in CASES for m in c.modes],
    ids=[f"{c.name}-{m}" for c in CASES for m in c.modes],
)
def test_etcdctl_watch_output_matches_etcd(
    case: WatchCase, mode: str, subject: str, node_factory: Callable[..., NodeProcess], etcdctl_bin: str
) -> None:
    with ThreadPoolExecutor(max_workers=2) as pool:
        expected = pool.submit(run_case, node_factory, "etcd", case, mode)
        actual = pool.submit(run_case, node_factory, subject, case, mode)
        assert actual.result() == expected.result()
