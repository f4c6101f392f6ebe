"""quorumctl against etcdctl 3.4, output for output, on real etcd.

Two fresh single-member etcd servers receive the same command list, one through the real etcdctl
and one through ``python -m cluster.ctl``; with identical histories their revisions, values and
sizes are identical, so stdout, stderr and exit status must match byte for byte once the values
that legitimately differ are normalised: the endpoint address, cluster and member IDs, timings,
database file sizes (bbolt growth depends on commit timing), log timestamps/client ids, and the
goroutine dump after a Go panic's first line, and KV hashes (the stored lease IDs differ).

quorumctl's etcdctl v2 spellings are deliberate differences, left out here and checked in
test_ctl_v2_spellings.py: their lines in the root help (ending "(etcdctl v2)") are removed before
comparing, and ``member add <name> <url>``, which etcdctl refuses, is not among the cases.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cluster.api.gen.etcdserverpb import rpc_pb2
from cluster.testing import ctlfork
from cluster.testing.ports import free_port
from cluster.testing.procs import make_node
from tests.conftest import require_etcd, require_etcdctl

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]
    stdin: bytes = b""
    env: dict[str, str] = field(default_factory=dict)
    endpoint_flag: bool = True
    protobuf: type | None = None
    kill_after: float | None = None

    def __str__(self) -> str:
        return " ".join(self.args)


def c(
    *args: str,
    stdin: str = "",
    env: dict[str, str] | None = None,
    endpoint_flag: bool = True,
    protobuf: type | None = None,
    kill_after: float | None = None,
) -> Case:
    return Case(tuple(args), stdin.encode(), env or {}, endpoint_flag, protobuf, kill_after)


TXN_OK = 'mod("k1") > "0"\n\nput k1 changed\nget k --prefix --keys-only\ndel nothing\n\nget k1\n\n'
TXN_FAIL = (
    'val("k1") = "nope"\nver("k2") != "9"\n\nput k1 x\n\nget k1 --keys-only\nput k2 fromtxn --prev-kv\n\n'
)

CASES: list[Case] = [
    c("version"),
    c("put", "foo", "bar"),
    c("put", "foo", "baz", "--prev-kv"),
    c("put", "foo", "baz2", "--prev-kv", "-w", "json"),
    c("put", "foo", "baz3", "--prev-kv", "-w", "fields"),
    c("put", "foo", "baz4", "-w", "protobuf", protobuf=rpc_pb2.PutResponse),
    c("put", "k1", "v1"),
    c("put", "k2", "v2"),
    c("put", "k3", "v3"),
    c("put", "bin", 'caf\u00e9 <&> "q"\t\x01'),
    c("put", "fromstdin", stdin="line one\nline two\n"),
    c("put", "--", "dash", "-value"),
    c("put", "foo", "--ignore-value"),
    c("put", "foo", "x", "--ignore-value"),
    c("put", "foo"),
    c("put"),
    c("put", "a", "1", "--lease", "zz"),
    c("put", "a", "1", "--lease", "123"),
    c("put", "", "x"),
    c("get", "foo"),
    c("get", "foo", "-w", "json"),
    c("get", "foo", "-w", "fields"),
    c("get", "foo", "-w", "protobuf", protobuf=rpc_pb2.RangeResponse),
    c("get", "bin", "-w", "json"),
    c("get", "bin", "-w", "fields"),
    c("get", "bin", "--hex"),
    c("get", "k", "--prefix"),
    c("get", "k", "--prefix", "--keys-only"),
    c("get", "k", "--prefix", "--print-value-only"),
    c("get", "k", "--prefix", "--print-value-only", "-w", "json"),
    c("get", "k1", "k3"),
    c("get", "k", "--prefix", "--limit", "1", "-w", "json"),
    c("get", "k", "--prefix", "--order", "DESCEND", "--sort-by", "MODIFY"),
    c("get", "k", "--prefix", "--order", "ascend", "--sort-by", "value", "-w", "json"),
    c("get", "", "--from-key", "--keys-only"),
    c("get", "", "--prefix", "--limit", "2"),
    c("get", "k2", "--from-key", "-w", "fields"),
    c("get", "foo", "--rev", "2"),
    c("get", "foo", "--consistency", "s"),
    c("get", "missing", "-w", "json"),
    c("get", "foo", "-w", "table"),
    c("get"),
    c("get", "foo", "--consistency", "q"),
    c("get", "foo", "--order", "sideways"),
    c("get", "foo", "--sort-by", "colour"),
    c("get", "k", "--prefix", "--from-key"),
    c("get", "k", "k2", "--prefix"),
    c("get", "foo", "--limit", "abc"),
    c("get", "foo", "--bogus"),
    c("del", "k1", "-w", "json"),
    c("del", "k", "--prefix", "--prev-kv"),
    c("del", "nothing"),
    c("del", "nothing", "-w", "fields"),
    c("del"),
    c("put", "k1", "v1"),
    c("put", "k2", "v2"),
    c("txn", stdin=TXN_OK),
    c("txn", "-w", "json", stdin=TXN_OK),
    c("txn", "-w", "fields", stdin=TXN_FAIL),
    c("txn", "-i", stdin=TXN_FAIL),
    c("txn", stdin='mod("k1") ? "0"\n'),
    c("txn", stdin='bogus("k1") = "0"\n\n\n\n'),
    c("txn", stdin='mod("k1") > "x"\n\n\n\n'),
    c("txn", stdin="mod(k1) > 0\n\n\n\n"),
    c("txn", stdin="\nfrobnicate a b\n\n\n"),
    c("txn", stdin="\nput a\n\n\n"),
    c("txn", stdin="\n\n"),
    c("txn", "extra"),
    c("compaction", "3"),
    c("compaction", "3"),
    c("compaction", "abc"),
    c("compaction"),
    c("compaction", "--physical", "4"),
    c("get", "foo", "--rev", "2"),
    c("endpoint", "status"),
    c("endpoint", "status", "-w", "json"),
    c("endpoint", "status", "-w", "table"),
    c("endpoint", "status", "-w", "fields"),
    c("endpoint", "status", "-w", "protobuf"),
    c("endpoint", "health"),
    c("endpoint", "health", "-w", "json"),
    c("endpoint", "health", "-w", "table"),
    c("endpoint", "health", "-w", "fields"),
    c("endpoint", "hashkv"),
    c("alarm", "list"),
    c("alarm", "list", "-w", "json"),
    c("member", "list", "-w", "json"),
    c("-w", "xml", "get", "foo"),
    c("foo"),
    c("ge", "foo"),
    c("--bogus", "get", "x"),
    c("--dial-timeout", "abc", "get", "foo"),
    c("get", "--help"),
    c("put", "-h"),
    c("endpoint"),
    c("help", "txn"),
    c("--help"),
    c("get", "foo", env={"ETCDCTL_WRITE_OUT": "json"}),
    c("get", "foo", "--hex", env={"ETCDCTL_HEX": "false"}),
    c(
        "get",
        "foo",
        endpoint_flag=False,
        env={"ETCDCTL_ENDPOINTS": "{endpoint}", "ETCDCTL_COMMAND_TIMEOUT": "3s"},
    ),
    c("get", "foo", env={"ETCDCTL_ENDPOINTS": "{endpoint}"}),
    c("get", "foo", env={"ETCDCTL_NO_SUCH_FLAG": "1"}),
    c("help", "nothing"),
    c("alarm", "list", "-w", "fields"),
    c("alarm", "disarm"),
    c("endpoint", "hashkv", "-w", "json"),
    c("endpoint", "hashkv", "-w", "table"),
    c("endpoint", "health", "--cluster"),
    c("endpoint", "status", "--cluster", "-w", "json"),
    c("member", "list"),
    c("member", "list", "-w", "table"),
    c("member", "list", "-w", "fields"),
    c("member", "add"),
    c("member", "add", "m2", "http://127.0.0.1:1", "http://127.0.0.1:2"),
    c("member", "add", "m2", "http://127.0.0.1:1", "--peer-urls", "http://127.0.0.1:2"),
    c("member", "add", "m2"),
    c("member", "add", "m2", "--peer-urls", "foo://x"),
    c("member", "add", "m2", "--peer-urls", "http://x"),
    c("member", "remove", "zz"),
    c("member", "remove", "1234"),
    c("member", "update", "1234"),
    c("member", "update", "1234", "--peer-urls", "http://127.0.0.1:1"),
    c("member", "promote", "1234"),
    c("defrag"),
    c("defrag", "--cluster"),
    c("move-leader"),
    c("move-leader", "zz"),
    c("move-leader", "1234"),
    c("snapshot", "save", "{scratch}/snap.db"),
    c("snapshot", "save", "{scratch}/missing/snap.db"),
    c("snapshot", "save"),
    c("--endpoints", "{endpoint},{dead}", "snapshot", "save", "{scratch}/two.db", endpoint_flag=False),
    c("--user", "root:secret", "get", "foo"),
    c("--cert", "", "get", "foo"),
    c("--endpoints", "{dead},{endpoint}", "get", "foo", endpoint_flag=False),
    c("--endpoints", "{dead},{endpoint}", "put", "fo", "over", endpoint_flag=False),
    c("--endpoints", "{dead},{endpoint}", "endpoint", "health", endpoint_flag=False),
    c("--endpoints", "{dead}", "--command-timeout", "1s", "get", "foo", endpoint_flag=False),
    c("--endpoints", "{dead}", "--command-timeout", "1s", "endpoint", "health", endpoint_flag=False),
    c("lease", "list"),
    c("lease", "list", "-w", "json"),
    c("lease", "list", "-w", "fields"),
    c("lease", "timetolive", "{lease}"),
    c("lease", "timetolive", "{lease}", "--keys", "-w", "json"),
    c("lease", "timetolive", "{lease}", "--keys", "-w", "fields"),
    c("lease", "timetolive", "{lease}", "-w", "protobuf", protobuf=rpc_pb2.ResponseHeader),
    c("lease", "keep-alive", "--once", "{lease}"),
    c("lease", "keep-alive", "--once", "{lease}", "-w", "json"),
    c("lease", "keep-alive", "--once", "{lease}", "-w", "table"),
    c("put", "leased2", "v", "--lease", "{lease}", "--prev-kv", "-w", "json"),
    c("get", "leased", "--prefix", "-w", "fields"),
    c("txn", "-w", "json", stdin="\nput viatxn v --lease {lease}\n\n\n"),
    c("lease", "revoke", "{lease}", "-w", "json"),
    c("lease", "revoke", "{lease}"),
    c("lease", "timetolive", "{lease}", "-w", "json"),
    c("lease", "timetolive", "{lease}"),
    c("lease", "keep-alive", "--once", "{lease}"),
    c("lease", "keep-alive", "{lease}"),
    c("lease", "grant", "60"),
    c("lease", "grant", "60", "-w", "json"),
    c("lease", "grant", "60", "-w", "fields"),
    c("lease", "grant", "x"),
    c("lease", "revoke", "zz"),
    c("lease"),
    c("get", "foo", "--count-only"),
    c("get", "foo", "--print-value-only", "--hex"),
    c("--endpoints", "{dead}", "--endpoints", "{endpoint}", "get", "foo", endpoint_flag=False),
    c("get", "foo", env={"ETCDCTL_WRITE_OUT": "table"}),
    c("watch", "foo", "--rev", "1"),
    c("watch", "k", "--prefix", "--rev", "5", "--prev-kv", kill_after=6),
    c("watch", "k1", "--rev", "5", "-w", "json", kill_after=6),
    c("watch", "k2", "--rev", "5", "-w", "fields", kill_after=6),
    c("watch"),
    c("watch", "a", "b", "--prefix"),
    c("watch", env={"ETCDCTL_WATCH_KEY": "k1", "ETCDCTL_WATCH_RANGE_END": "k3"}, kill_after=6),
    c("watch", "x", env={"ETCDCTL_WATCH_KEY": "k1"}),
    c("watch", env={"ETCDCTL_WATCH_RANGE_END": "k3"}),
    c("watch", "foo", "--"),
    c("watch", "--rev", "1", "foo", "--", "sh", "-c", 'echo "$ETCD_WATCH_REVISION $ETCD_WATCH_KEY"; exit 3'),
    c("watch", "-i", stdin="bogus\nwatch\nwatch a b --prefix\n\n"),
    c("lock"),
    c("lock", "ql", "--", "sh", "-c", "echo rev=$ETCD_LOCK_REV key=${ETCD_LOCK_KEY%/*}; exit 2"),
    c("lock", "ql", "--", "no-such-command-x"),
    c("elect"),
    c("elect", "x"),
    c("elect", "-l", "x", "y"),
    c("role", "add", "ra"),
    c("role", "add", "ra", "-w", "json"),
    c("role", "add", "rb", "-w", "fields"),
    c("role", "grant-permission", "ra", "read", "k"),
    c("role", "grant-permission", "ra", "write", "k", "--prefix"),
    c("role", "grant-permission", "ra", "readwrite", "a", "z", "-w", "json"),
    c("role", "grant-permission", "ra", "READ", "", "--from-key"),
    c("role", "grant-permission", "ra", "bogus", "k"),
    c("role", "grant-permission", "ra", "read", "k", "z", "--prefix"),
    c("role", "get", "ra"),
    c("role", "get", "ra", "-w", "json"),
    c("role", "get", "ra", "-w", "fields"),
    c("role", "get", "ra", "-w", "protobuf", protobuf=rpc_pb2.AuthRoleGetResponse),
    c("role", "list"),
    c("role", "list", "-w", "fields"),
    c("user", "add", "u1:pw"),
    c("user", "add", "u2", "--new-user-password", "pw", "-w", "json"),
    c("user", "add", "u3", "--no-password", "-w", "fields"),
    c("user", "add", ":x"),
    c("user", "grant-role", "u1", "ra"),
    c("user", "grant-role", "u1", "rb"),
    c("user", "grant-role", "u1", "nope"),
    c("user", "get", "u1"),
    c("user", "get", "u1", "--detail"),
    c("user", "get", "u1", "-w", "fields"),
    c("user", "list"),
    c("user", "list", "-w", "json"),
    c("user", "revoke-role", "u1", "rb"),
    c("role", "revoke-permission", "ra", "k"),
    c("role", "revoke-permission", "ra", "k", "--prefix"),
    c("role", "revoke-permission", "ra", "", "--from-key"),
    c("role", "revoke-permission", "ra", "a", "z", "-w", "fields"),
    c("user", "passwd", "u1", "--interactive=false", stdin="newpw\n"),
    c("user", "delete", "u1"),
    c("user", "delete", "u1"),
    c("role", "delete", "rb"),
    c("auth", "enable"),
    c("user", "add", "root:rootpw"),
    c("auth", "enable"),
    c("get", "foo"),
    c("--user", "root:rootpw", "get", "foo"),
    c("--user", "u2", "--password", "pw", "get", "foo"),
    c("--user", "root:wrong", "get", "foo"),
    c("endpoint", "health"),
    c("auth", "disable"),
    c("--user", "root:rootpw", "auth", "disable"),
    c("del", "", "--prefix"),
    c("get", "", "--prefix", "-w", "json"),
]


@dataclass
class Target:
    endpoint: str
    peer: str
    ids: dict[str, str]
    dead: str
    lease: str
    scratch: str

    def fill(self, text: str) -> str:
        for name in ("endpoint", "dead", "lease", "scratch"):
            text = text.replace("{" + name + "}", getattr(self, name))
        return text


def _run(cmd: list[str], case: Case, target: Target) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update({k: target.fill(v) for k, v in case.env.items()})
    stdin = target.fill(case.stdin.decode()).encode()
    flag = [f"--endpoints={target.endpoint}"] if case.endpoint_flag else []
    argv = [*cmd, *flag, *(target.fill(arg) for arg in case.args)]
    if case.kill_after is None:
        return ctlfork.run(argv, input=stdin, env=env, timeout=60)
    try:
        ctlfork.run(argv, input=stdin, env=env, timeout=case.kill_after)
    except subprocess.TimeoutExpired as stopped:
        return subprocess.CompletedProcess(argv, -9, stopped.stdout or b"", stopped.stderr or b"")
    raise AssertionError(f"{case} was expected to run until killed")


def _normalise(data: bytes, target: Target) -> str:
    text = data.decode("utf-8", "surrogateescape")
    text = text.replace(target.endpoint, "<EP>").replace(target.peer, "<PEER>").replace(target.dead, "<DEAD>")
    text = text.replace(target.scratch, "<SCRATCH>")
    for value, name in target.ids.items():
        text = text.replace(value, name)
    text = re.sub(r'"ts":"[^"]+"', '"ts":"<TS>"', text)
    text = re.sub(r'"ts":[0-9.e+]+', '"ts":<TS>', text)
    text = re.sub(r'"took":[0-9.e-]+', '"took":<T>', text)
    text = re.sub(r'"size":"[^"]+"', '"size":"<SIZE>"', text)
    text = re.sub(r'("hash":|"Hash" : |<EP>, |<EP> \| )\d+', r"\1<HASH>", text)
    text = re.sub(r"lease [0-9a-f]{16} granted with", "lease <NEW> granted with", text)
    text = re.sub(r'("ID":|"ID" : )\d{12,}', r"\1<NEW>", text)
    text = re.sub(r'remaining\(\d+s\)|"ttl":\d+|"TTL" : \d+', "<TTL>", text)
    text = re.sub(r'("dbSize(?:InUse)?":|"DBSize" : )\d+', r"\1<SIZE>", text)
    text = re.sub(r"\b\d+(?:\.\d)? [kMGT]?B\b", "<SIZE>", text)
    text = re.sub(r"client-[0-9a-f-]{36}", "client-<ID>", text)
    text = re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}", "<TIME>", text)
    text = re.sub(r"took = [0-9.]+[a-z\u00b5]+", "took = <T>", text)
    text = re.sub(r'"took":"[^"]+"', '"took":"<T>"', text)
    text = re.sub(r'"Took" : \S+', '"Took" : <T>', text)
    text = re.sub(r"\| +[0-9.]+(ms|s|\u00b5s) +\|", "| <T> |", text)
    text = re.sub(r"(?m)^([|+].*)$", lambda m: re.sub(r"([ -])\1+", r"\1", m.group(1)), text)
    text = re.sub(r"(?s)^(panic: [^\n]*\n).*", r"\1", text)
    return re.sub(r"(?m)^\t[^\n]*\(etcdctl v2\)\n", "", text)


def _protobuf_normalised(data: bytes, kind: type) -> str:
    message = kind.FromString(data)  # type: ignore[attr-defined]
    header = message if kind is rpc_pb2.ResponseHeader else message.header
    header.cluster_id = 0
    header.member_id = 0
    return str(message)


def _start_etcd() -> Iterator[Target]:
    node = make_node("etcd")
    node.start()
    try:
        status = subprocess.run(
            [require_etcdctl(), f"--endpoints={node.endpoint}", "endpoint", "status", "-w", "json"],
            capture_output=True,
            check=True,
            timeout=30,
        )
        header = json.loads(status.stdout)[0]["Status"]["header"]
        grant = subprocess.run(
            [require_etcdctl(), f"--endpoints={node.endpoint}", "lease", "grant", "600"],
            capture_output=True,
            check=True,
            timeout=30,
        )
        lease = grant.stdout.split()[1].decode()
        subprocess.run(
            [require_etcdctl(), f"--endpoints={node.endpoint}", "put", "leased", "v", "--lease", lease],
            capture_output=True,
            check=True,
            timeout=30,
        )
        ids = {
            str(header["cluster_id"]): "<CLUSTER>",
            str(header["member_id"]): "<MEMBER>",
            f"{header['member_id']:x}": "<MEMBERHEX>",
            lease: "<LEASE>",
            str(int(lease, 16)): "<LEASEDEC>",
        }
        with tempfile.TemporaryDirectory() as scratch:
            yield Target(node.endpoint, node.peer_url, ids, f"127.0.0.1:{free_port()}", lease, scratch)
    finally:
        node.close()


def _transcript(cmd: list[str]) -> list[tuple[str, str, int]]:
    rows = []
    for target in _start_etcd():
        for case in CASES:
            done = _run(cmd, case, target)
            if case.protobuf is not None and done.returncode == 0:
                out = _protobuf_normalised(done.stdout, case.protobuf)
            else:
                out = _normalise(done.stdout, target)
            rows.append((out, _normalise(done.stderr, target), done.returncode))
    return rows


@pytest.fixture(scope="module")
def transcripts() -> dict[str, list[tuple[str, str, int]]]:
    """Both tools' normalised transcripts, each on its own etcd (run side by side)."""
    require_etcd()
    runners = {"etcdctl": [require_etcdctl()], "quorumctl": ctlfork.QUORUMCTL}
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(_transcript, cmd) for name, cmd in runners.items()}
        return {name: future.result() for name, future in futures.items()}


@pytest.mark.etcd
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("index", range(len(CASES)), ids=[str(case) for case in CASES])
def test_quorumctl_output_matches_etcdctl(
    transcripts: dict[str, list[tuple[str, str, int]]], index: int
) -> None:
    expected = transcripts["etcdctl"][index]
    actual = transcripts["quorumctl"][index]
    assert actual[2] == expected[2], (
        f"exit status differs\nexpected stderr:\n{expected[1]}\nactual:\n{actual[1]}"
    )
    assert actual[0] == expected[0], "stdout differs"
    assert actual[1] == expected[1], "stderr differs"
