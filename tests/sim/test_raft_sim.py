"""Seeded Raft simulation: many random runs with faults, invariants checked after every step.

A failure message ends with the command that replays the seed, e.g.
`python -m cluster.testing.raftsim --seed 123 --ticks 200` (add `--trace` to see the events).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor

import pytest

from cluster.testing.raftsim import InvariantViolation, SimConfig, Simulation

SEEDS = int(os.environ.get("RAFTSIM_SEEDS", "240"))
TICKS = int(os.environ.get("RAFTSIM_TICKS", "200"))
BUDGET_S = float(os.environ.get("RAFTSIM_BUDGET_S", "45"))


def test_many_seeds_keep_raft_invariants():
    started = time.monotonic()
    failures = []
    ran = 0
    for seed in range(SEEDS):
        if time.monotonic() - started > BUDGET_S:
            break
        try:
            Simulation(SimConfig.from_seed(seed, ticks=TICKS)).run()
        except InvariantViolation as e:
            failures.append(str(e))
        ran += 1
    assert not failures, "\n".join(failures[:5])
    assert ran >= min(SEEDS, 20)


CI_SEEDS = 2000
CI_BUDGET_S = 600.0


def _run_seed_range(first: int, count: int) -> list[str]:
    failures = []
    for seed in range(first, first + count):
        try:
            Simulation(SimConfig.from_seed(seed, ticks=TICKS)).run()
        except InvariantViolation as e:
            failures.append(str(e))
    return failures


@pytest.mark.slow
@pytest.mark.timeout(CI_BUDGET_S + 60)
def test_two_thousand_seeds_keep_raft_invariants():
    """Issue 3's bar: at least 2,000 seeds in CI, bounded in time (split over the machine's cores).

    Seeds 10,000-11,999, so they do not repeat the default test's. A longer run is documented in
    docs/performance.md ("Raft simulator").
    """
    workers = max(1, min(4, os.cpu_count() or 1))
    chunk = CI_SEEDS // workers
    started = time.monotonic()
    with ProcessPoolExecutor(workers) as pool:
        parts = [pool.submit(_run_seed_range, 10_000 + i * chunk, chunk) for i in range(workers)]
        failures = [f for part in parts for f in part.result(timeout=CI_BUDGET_S)]
    assert workers * chunk == CI_SEEDS
    assert not failures, "\n".join(failures[:5])
    assert time.monotonic() - started < CI_BUDGET_S


# Seeds that once failed, kept as regressions (config comes from the seed: see SimConfig.from_seed).
REGRESSION_SEEDS = [
    10875,  # restart after a torn write kept a snapshot but not its hard state
    20588,  # a stale leader of a lower term legitimately misses entries committed in a later term
]


@pytest.mark.parametrize("seed", REGRESSION_SEEDS)
def test_regression_seed(seed):
    Simulation(SimConfig.from_seed(seed, ticks=300)).run()


def test_membership_changes_of_every_kind_commit_under_faults():
    """The generator really drives learners, additions, promotions, removals and refusals through
    Raft while messages are dropped, members crash and the network partitions; invariants hold."""
    total: Counter[str] = Counter()
    for seed in range(6):
        cfg = SimConfig(seed=seed, ticks=300, nodes=3, drop=0.05, crash=0.002, partition=0.01,
                        conf_change=0.1, refuse_conf_change=0.2)  # fmt: skip
        sim = Simulation(cfg)
        sim.run()
        total.update(sim.conf_changes)
    assert set(total) == {"learner", "add", "promote", "remove", "refused"}, total


def test_a_refused_membership_change_is_a_no_op_on_every_member():
    sim = Simulation(SimConfig(seed=3, ticks=300, nodes=3, conf_change=0.1, refuse_conf_change=1.0))
    sim.run()
    assert sim.conf_changes["refused"] > 0
    assert set(sim.conf_changes) == {"refused"}
    assert all(n.conf_state.voters == (1, 2, 3) and not n.conf_state.learners for n in sim.nodes.values())
    assert len(sim.nodes) == 3


@pytest.mark.parametrize("nodes", [1, 3, 5])
def test_cluster_sizes_make_progress(nodes):
    sim = Simulation(SimConfig(seed=1000 + nodes, ticks=150, nodes=nodes))  # moderate default faults
    sim.run()
    assert len(sim.committed) > 10
    assert sim.leader_of_term


def test_failing_seed_reports_replay_command():
    sim = Simulation(SimConfig.from_seed(7, ticks=10))
    with pytest.raises(InvariantViolation, match=r"replay: python -m cluster.testing.raftsim --seed 7"):
        sim.fail("forced")
