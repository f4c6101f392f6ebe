"""quorumctl check perf / check datascale print what etcdctl 3.4 prints, against a quorum cluster.

Both CLIs run the same check against the same 3-member quorum cluster (under different prefixes);
numbers differ from run to run, so lines are compared by shape: digits become N, and a PASS line and
its FAIL twin (``PASS: Throughput is`` / ``FAIL: Throughput too low``) count as the same line.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from cluster.testing.procs import NodeProcess, etcdctl, quorumctl
from tests.conftest import NodeFactory, require_etcdctl

BAR = re.compile(r"^ \d+ / \d+ +\d+\.\d\d%( \S+)?$")
FINAL_BAR = re.compile(r"^ (\d+) / \1 +100\.00% \S+$")
TWINS = (
    (re.compile(r"^(PASS: Throughput is|FAIL: Throughput too low:) \d+ writes/s$"), "throughput"),
    (re.compile(r"^(PASS: Slowest request took|Slowest request took too long:) \d+\.\d{6}s$"), "slowest"),
    (re.compile(r"^(PASS: Stddev is|Stddev too high:) (\d+\.\d{6}|NaN)s$"), "stddev"),
    (re.compile(r"^(PASS|FAIL)$"), "verdict"),
)


def shape(output: str) -> tuple[list[str], list[str]]:
    """(the non-bar lines by shape, the progress-bar redraws as printed)."""
    lines, bars = [], []
    for piece in re.split(r"[\r\n]", output):
        if not piece.strip():
            continue
        if BAR.match(piece):
            bars.append(piece)
            continue
        kind = next((name for pattern, name in TWINS if pattern.match(piece)), None)
        lines.append(kind or re.sub(r"\d+(\.\d+)?", "N", piece))
    return lines, bars


@pytest.fixture(scope="module")
def cluster(module_node_factory: NodeFactory) -> Iterator[list[NodeProcess]]:
    require_etcdctl()
    yield module_node_factory.cluster("quorum", 3, fast_election=False)  # etcd's timing: fewer elections


def endpoints(nodes: list[NodeProcess]) -> str:
    return ",".join(n.endpoint for n in nodes)


def both(
    eps: str, *args: str, prefix: str, timeout: float
) -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]:
    with ThreadPoolExecutor(2) as pool:
        ours = pool.submit(quorumctl, eps, *args, f"--prefix={prefix}q/", timeout=timeout)
        theirs = pool.submit(etcdctl, eps, *args, f"--prefix={prefix}e/", timeout=timeout)
        return ours.result(), theirs.result()


def test_check_refuses_a_prefix_that_holds_keys(cluster: list[NodeProcess]) -> None:
    eps = endpoints(cluster)
    assert etcdctl(eps, "put", "/busy/k", "v").returncode == 0
    ours = quorumctl(eps, "check", "perf", "--prefix=/busy/")
    theirs = etcdctl(eps, "check", "perf", "--prefix=/busy/")
    assert (
        (ours.returncode, ours.stderr)
        == (theirs.returncode, theirs.stderr)
        == (3, 'Error: prefix "/busy/" has keys. Delete with etcdctl del --prefix /busy/ first\n')
    )
    ours = quorumctl(eps, "check", "datascale", "--prefix=/busy/")
    assert ours.returncode == 3 and "has keys" in ours.stderr


def run_datascale(eps: str, prefix: str, *flags: str) -> list[tuple[list[str], list[str], int]]:
    """quorumctl's then etcdctl's run (one after the other: each measures the first endpoint's memory)."""
    results = []
    for run in (quorumctl, etcdctl):
        done = run(eps, "check", "datascale", *flags, f"--prefix={prefix}{run.__name__}/", timeout=240)
        results.append((*shape(done.stdout), done.returncode))
    return results


@pytest.mark.parametrize("kind", ["etcd", pytest.param("quorum", marks=pytest.mark.slow)])
def test_check_datascale_passes_and_prints_etcdctls_lines(node_factory: NodeFactory, kind: str) -> None:
    """datascale writes 512-byte keys: Quorum stores keys of any length, as etcd (a known difference
    until keys over LMDB's 511-byte key limit were stored as prefix + digest)."""
    node = node_factory(kind)
    (ours, our_bars, our_rc), (theirs, their_bars, their_rc) = run_datascale(
        node.endpoint, "/ds-", "--auto-compact", "--auto-defrag"
    )
    assert ours == theirs
    assert (our_rc, their_rc) == (0, 0)
    assert ours[0] == (
        "Start data scale check for work load "
        "[N key-value pairs, N bytes per key-value, N concurrent clients]."
    )
    assert ours[1:5] == [
        "Compacting with revision N",
        "Compacted with revision N",
        'Defragmenting "N.N:N"',
        'Defragmented "N.N:N"',
    ]
    assert re.match(r"PASS: Approximate system memory used : -?N MB\.$", ours[-1])
    assert our_bars[0].startswith(" 0 / 10000 ")
    assert FINAL_BAR.match(our_bars[-1]) and FINAL_BAR.match(their_bars[-1])
    assert etcdctl(node.endpoint, "get", "/ds-", "--prefix", "--keys-only").stdout == ""


@pytest.mark.slow
def test_check_perf_prints_etcdctls_lines_and_exit_status(cluster: list[NodeProcess]) -> None:
    ours, theirs = both(endpoints(cluster), "check", "perf", "--load=s", prefix="/perf-", timeout=150)
    for done in (ours, theirs):
        lines, bars = shape(done.stdout)
        # Failed puts (a loaded machine can time some out) are listed first, as etcdctl does.
        errors = [x for x in lines if x.startswith("FAIL: ERROR(")]
        if errors:
            assert lines[0] == "FAIL: too many errors", done
            assert all(re.fullmatch(r"FAIL: ERROR\(.+\) -> N", x) for x in errors), done
        assert lines[1 + len(errors) if errors else 0 :] == ["throughput", "slowest", "stddev", "verdict"], (
            done
        )
        passed = done.stdout.rstrip().endswith("\nPASS")
        assert done.returncode == (0 if passed else 1), done
        assert bars[0].startswith(" 0 / 60 ") and FINAL_BAR.match(bars[-1]), done
