"""Seeded chaos runs against a real three-member cluster: the default set is short and bounded (about a
minute and a half); more seeds are behind ``-m slow``; the soak is ``scripts/soak`` (docs/reliability.md).

Real etcd 3.4 runs the same workload and checker first, to show the checker is not too strict; and a
history recorded from a real run, with one planted bug, is rejected, to show it is not too lenient on
histories of realistic size. Every run has leases (granted, kept alive, revoked, left to expire) and
serializable reads; two runs put the gateway and the gRPC proxy in front of the cluster.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest

from cluster.testing.chaos.history import (
    History,
    LeaseGrant,
    LeaseKeepAlive,
    LeaseRevoke,
    Put,
    Range,
    RangeResult,
    Response,
    WatchResponse,
    WatchSegment,
    WatchStream,
)
from cluster.testing.chaos.linearizability import check_history
from cluster.testing.chaos.runner import RunConfig, Verdict, run
from cluster.testing.chaos.serializable import check_serializable, serializable_reads
from cluster.testing.chaos.watchcheck import check_watches
from cluster.testing.chaos.workload import WorkloadConfig
from tests.conftest import require_node_kind

ALL = ("kill", "pause", "partition", "delay", "compact", "defrag")


def chaos(target: str, seed: int, duration: float, faults: tuple[str, ...], front: str = "") -> Verdict:
    require_node_kind(target)
    verdict = run(RunConfig(seed, duration, faults, target, front=front))
    print(verdict.text())
    return verdict


def exercised(history: History | None) -> Counter[str]:
    """How many ok lease operations of each kind, puts with a lease and serializable reads a run did."""
    assert history is not None
    tally: Counter[str] = Counter()
    for op in history.operations:
        if op.outcome == "ok" and isinstance(op.request, LeaseGrant | LeaseRevoke | LeaseKeepAlive):
            tally[type(op.request).__name__] += 1
        if op.outcome == "ok" and isinstance(op.request, Put) and op.request.lease:
            tally["put with lease"] += 1
    tally["serializable"] = len(serializable_reads(history.operations))
    return tally


LEASE_KINDS = ("LeaseGrant", "LeaseRevoke", "LeaseKeepAlive", "put with lease", "serializable")


def test_real_etcd_passes_the_same_workload_and_checker() -> None:
    verdict = chaos("etcd", 1, 10, ALL)
    assert verdict.ok is True, verdict.text()
    tally = exercised(verdict.history)
    assert all(tally[k] for k in LEASE_KINDS), tally


@pytest.mark.parametrize(
    ("seed", "faults"),
    [
        (1, ("kill", "pause")),
        (2, ("partition", "delay")),
        (3, ("compact", "defrag", "kill")),
        (4, ALL),
        (5, ("loss",)),
    ],
)
def test_quorum_keeps_its_guarantees_under_faults(seed: int, faults: tuple[str, ...]) -> None:
    verdict = chaos("quorum", seed, 10, faults)
    assert verdict.ok is True, verdict.text()
    injected = next(line for line in verdict.summary if line.startswith("faults injected:"))
    if faults == ("loss",):
        assert "(loss " in injected, injected
    tally = exercised(verdict.history)
    assert all(tally[k] for k in LEASE_KINDS), tally


@pytest.mark.parametrize(("front", "seed"), [("gateway", 21), ("grpcproxy", 22)])
def test_quorum_keeps_its_guarantees_behind_a_proxy(front: str, seed: int) -> None:
    verdict = chaos("quorum", seed, 8, ("kill", "partition", "compact"), front)
    assert verdict.ok is True, verdict.text()


@pytest.mark.slow
@pytest.mark.parametrize("front", ["gateway", "grpcproxy"])
def test_real_etcd_passes_behind_a_proxy(front: str) -> None:
    verdict = chaos("etcd", 23, 10, ("kill", "partition", "compact"), front)
    assert verdict.ok is True, verdict.text()


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(5, 21))
def test_quorum_keeps_its_guarantees_under_faults_more_seeds(seed: int) -> None:
    verdict = chaos("quorum", seed, 15, ALL)
    assert verdict.ok is True, verdict.text()


def test_a_planted_bug_in_a_real_history_is_caught() -> None:
    verdict = chaos("quorum", 7, 4, ())
    assert verdict.ok is True and verdict.history is not None, verdict.text()
    history = verdict.history
    keyspace = WorkloadConfig().keyspace
    assert check_history(history.operations, history.watches).ok is True
    assert check_serializable(history.operations) == []
    for serializable in (False, True):
        stale = _with_bogus_read(history, serializable)
        assert check_history(stale.operations, stale.watches).ok is False

    full = history.watches[0]
    segment = next(s for s in full.segments if sum(len(r.events) for r in s.responses) > 10)
    responses = list(segment.responses)
    middle = next(i for i in range(len(responses) // 2, len(responses)) if responses[i].events)
    for planted in (
        responses[:middle] + responses[middle + 1 :],
        [*responses[: middle + 1], responses[middle], *responses[middle + 1 :]],
    ):
        broken = _replace_segment(full, segment, planted)
        result = check_watches(history.operations, [broken, *history.watches[1:]], keyspace)
        assert not result.ok


def _with_bogus_read(history: History, serializable: bool = False) -> History:
    """The last ok whole-keyspace (linearizable or serializable) read answers a value nobody wrote."""
    ops = list(history.operations)
    i = max(
        i for i, op in enumerate(ops)
        if op.outcome == "ok" and isinstance(op.request, Range) and op.request.range_end and op.response
        and op.request.serializable == serializable
        and op.response.results and op.response.results[0].kvs  # type: ignore[union-attr]
    )  # fmt: skip
    op = ops[i]
    assert op.response is not None and isinstance(op.response.results[0], RangeResult)
    kvs = op.response.results[0].kvs
    bad = (dataclasses.replace(kvs[0], value=b"never-written"), *kvs[1:])
    ops[i] = dataclasses.replace(op, response=Response(op.response.revision, True, (RangeResult(bad),)))
    return History(operations=ops, watches=history.watches)


def _replace_segment(watch: WatchStream, old: WatchSegment, responses: list[WatchResponse]) -> WatchStream:
    segments = tuple(
        dataclasses.replace(s, responses=tuple(responses)) if s is old else s for s in watch.segments
    )
    return dataclasses.replace(watch, segments=segments)
