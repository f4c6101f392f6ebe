"""Leases through the real etcdctl 3.4: the same script against real etcd and Quorum, output compared.

Normalised where the two legitimately differ: lease ids (server-chosen: member prefix + clock), the
cluster/member ids and raft term in JSON headers, the order of attached keys (etcd prints a Go map),
and a remaining TTL that may be a second lower on a slower run. Revisions are compared as they are.
"""

from __future__ import annotations

import json
import re
import time

import pytest

from cluster.testing.procs import NodeProcess, etcdctl

_HEX_ID = re.compile(r"\b[0-9a-f]{16}\b")
_KEYS_TEXT = re.compile(r"attached keys\(\[([^\]]*)\]\)")
_REMAINING = re.compile(r"remaining\((\d+)s\)")


class Transcript:
    """Runs etcdctl commands against one node and records normalised output."""

    def __init__(self, node: NodeProcess) -> None:
        self.node = node
        self.lines: list[str] = []
        self._ids: dict[int, str] = {}

    def name_of(self, lease_id: int) -> str:
        return self._ids.setdefault(lease_id, f"L{len(self._ids) + 1}")

    def run(self, *args: str) -> str:
        done = etcdctl(self.node.endpoint, *args, timeout=30)
        out = self._normalise(done.stdout.strip())
        err = [line for line in done.stderr.strip().splitlines() if line.startswith("Error:")]
        self.lines.append(f"$ etcdctl {self._normalise(' '.join(args))}")
        self.lines.append(f"rc={done.returncode} {out}" + (f" | {err[-1]}" if err else ""))
        return done.stdout

    def grant(self, ttl: str) -> str:
        out = self.run("lease", "grant", ttl)
        return out.split()[1]

    def _normalise(self, text: str) -> str:
        if text.startswith("{"):
            return self._normalise_json(json.loads(text))
        text = _HEX_ID.sub(lambda m: self.name_of(int(m.group(0), 16)), text)
        text = _KEYS_TEXT.sub(lambda m: f"attached keys([{' '.join(sorted(m.group(1).split()))}])", text)
        return text

    def _normalise_json(self, doc: dict[str, object]) -> str:
        header = doc.get("header", doc)
        assert isinstance(header, dict)
        for field in ("cluster_id", "member_id", "raft_term"):
            if field in header:
                header[field] = "X"
        for field in ("id", "ID"):
            if field in doc:
                doc[field] = self.name_of(int(doc[field]))  # type: ignore[call-overload]
        if "leases" in doc:
            doc["leases"] = [{"id": self.name_of(int(le["id"]))} for le in doc["leases"]]  # type: ignore[attr-defined]
        if isinstance(doc.get("keys"), list):
            doc["keys"] = sorted(doc["keys"])  # type: ignore[type-var]
        return json.dumps(doc, sort_keys=True)


def _ttl_close(expected: str, actual: str) -> str:
    """Let a remaining TTL one second lower than the reference's count as equal."""
    exp, act = _REMAINING.findall(expected), _REMAINING.findall(actual)
    if len(exp) == len(act) and all(abs(int(a) - int(b)) <= 1 for a, b in zip(exp, act, strict=True)):
        it = iter(exp)
        return _REMAINING.sub(lambda m: f"remaining({next(it)}s)", actual)
    return actual


def lease_script(t: Transcript) -> None:
    long_lease = t.grant("100")
    t.run("lease", "revoke", t.grant("0"))  # raised to the minimum TTL; revoked before it can expire
    t.run("lease", "grant", "9000000001")
    t.run("put", f"--lease={long_lease}", "k1", "v1")
    t.run("put", f"--lease={long_lease}", "k0", "v0")
    t.run("put", f"--lease={long_lease}", "k1", "v1b")
    t.run("lease", "timetolive", long_lease)
    t.run("lease", "timetolive", long_lease, "--keys")
    t.run("lease", "timetolive", long_lease, "--keys", "-w", "json")
    t.run("lease", "keep-alive", "--once", long_lease)
    t.run("lease", "keep-alive", "--once", "1234")
    t.run("lease", "timetolive", "1234")
    t.run("lease", "timetolive", "1234", "-w", "json")
    other = t.grant("50")
    t.run("lease", "list")
    t.run("lease", "list", "-w", "json")
    t.run("put", "--lease=1234", "x", "y")
    t.run("put", "k2", "v2")
    t.run("lease", "revoke", long_lease, "-w", "json")
    t.run("lease", "revoke", long_lease)
    t.run("lease", "timetolive", long_lease)
    t.run("get", "k", "--prefix")
    t.run("put", f"--lease={other}", "k2", "v2")
    t.run("lease", "revoke", other)
    t.run("get", "k", "--prefix", "-w", "json")
    t.run("lease", "list")
    t.run("lease", "keep-alive", "--once", other)


def test_lease_commands_print_what_etcd_prints(node_factory) -> None:
    expected = Transcript(node_factory("etcd"))
    actual = Transcript(node_factory("quorum"))
    lease_script(expected)
    lease_script(actual)
    assert len(expected.lines) == len(actual.lines)
    for exp, act in zip(expected.lines, actual.lines, strict=True):
        assert _ttl_close(exp, act) == exp


@pytest.mark.parametrize("kind", ["etcd", "quorum"])
def test_expired_lease_deletes_its_keys_in_one_revision(node_factory, kind: str) -> None:
    node = node_factory(kind)
    t = Transcript(node)
    lease = t.grant("1")
    for key in ("e1", "e2", "e3"):
        etcdctl(node.endpoint, "put", f"--lease={lease}", key, "v")
    before = json.loads(etcdctl(node.endpoint, "get", "e", "-w", "json").stdout)["header"]["revision"]
    started = time.monotonic()
    while etcdctl(node.endpoint, "get", "e", "--prefix", "--keys-only").stdout.strip():
        assert time.monotonic() - started < 6, "lease with TTL 1s did not expire"
        time.sleep(0.05)
    after = json.loads(etcdctl(node.endpoint, "get", "e", "-w", "json").stdout)["header"]["revision"]
    assert after == before + 1
    gone = etcdctl(node.endpoint, "lease", "timetolive", lease)
    assert gone.stdout.strip() == f"lease {lease} already expired"
    assert "lease" not in etcdctl(node.endpoint, "lease", "list").stdout.split("\n", 1)[1]


def test_leases_survive_restart_with_a_fresh_ttl(node_factory) -> None:
    node = node_factory("quorum")
    t = Transcript(node)
    lease = t.grant("30")
    etcdctl(node.endpoint, "put", f"--lease={lease}", "r", "v")
    time.sleep(1.2)
    node.restart()
    out = etcdctl(node.endpoint, "lease", "timetolive", lease, "--keys").stdout.strip()
    match = _REMAINING.search(out)
    assert match is not None and int(match.group(1)) >= 29, out  # fresh TTL (+ election extension)
    assert out.endswith("attached keys([r])")
    assert etcdctl(node.endpoint, "lease", "list").stdout.split() == ["found", "1", "leases", lease]
    assert etcdctl(node.endpoint, "lease", "revoke", lease).returncode == 0
    assert etcdctl(node.endpoint, "get", "r").stdout == ""
