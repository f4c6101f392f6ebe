"""RaftLog, Unstable, MemoryStorage and progress tracking (after etcd's log/storage/tracker tests)."""

from __future__ import annotations

import pytest

from cluster.raft import CompactedError, MemoryStorage, SnapOutOfDateError, UnavailableError
from cluster.raft.log import RaftLog
from cluster.raft.storage import limit_size
from cluster.raft.tracker import Inflights, Progress, ProgressState, ProgressTracker, VoteResult
from cluster.raft.types import ConfState, Entry, Snapshot, SnapshotMetadata


def ents(*pairs: tuple[int, int]) -> list[Entry]:
    return [Entry(term=t, index=i) for i, t in pairs]


def storage_3_4_5() -> MemoryStorage:
    """Storage compacted at (3, 3) holding entries 4 and 5 (terms 4 and 5)."""
    s = MemoryStorage()
    s.apply_snapshot(Snapshot(metadata=SnapshotMetadata(index=3, term=3)))
    s.append(ents((4, 4), (5, 5)))
    return s


class TestMemoryStorage:
    def test_term_bounds(self):
        s = storage_3_4_5()
        with pytest.raises(CompactedError):
            s.term(2)
        assert [s.term(i) for i in (3, 4, 5)] == [3, 4, 5]
        with pytest.raises(UnavailableError):
            s.term(6)

    def test_entries_bounds_and_size_limit(self):
        s = storage_3_4_5()
        s.append(ents((6, 6)))
        with pytest.raises(CompactedError):
            s.entries(3, 5)
        assert [e.index for e in s.entries(4, 7)] == [4, 5, 6]
        assert [e.index for e in s.entries(4, 7, max_size=1)] == [4]

    def test_first_last_index_and_compact(self):
        s = storage_3_4_5()
        assert (s.first_index(), s.last_index()) == (4, 5)
        s.compact(4)
        assert (s.first_index(), s.last_index()) == (5, 5)
        with pytest.raises(CompactedError):
            s.compact(4)

    def test_create_snapshot_needs_newer_index(self):
        s = storage_3_4_5()
        snap = s.create_snapshot(4, ConfState(voters=(1, 2)), b"data")
        assert (snap.metadata.index, snap.metadata.term, snap.data) == (4, 4, b"data")
        with pytest.raises(SnapOutOfDateError):
            s.create_snapshot(4, None, b"")

    @pytest.mark.parametrize(
        ("new", "want"),
        [
            (ents((3, 3), (4, 4), (5, 5)), ents((3, 3), (4, 4), (5, 5))),
            (ents((3, 3), (4, 6), (5, 6)), ents((3, 3), (4, 6), (5, 6))),
            (ents((3, 3), (4, 4), (5, 5), (6, 5)), ents((3, 3), (4, 4), (5, 5), (6, 5))),
            (ents((2, 3), (3, 3), (4, 5)), ents((3, 3), (4, 5))),  # truncates compacted part
            (ents((4, 5)), ents((3, 3), (4, 5))),  # conflict replaces the tail
            (ents((6, 5)), ents((3, 3), (4, 4), (5, 5), (6, 5))),
        ],
    )
    def test_append(self, new, want):
        s = storage_3_4_5()
        s.append(new)
        assert [(e.index, e.term) for e in s.entries(4, s.last_index() + 1)] == [
            (e.index, e.term) for e in want[1:]
        ]

    def test_append_with_gap_is_refused(self):
        s = storage_3_4_5()
        with pytest.raises(IndexError):
            s.append(ents((7, 5)))

    def test_apply_snapshot_replaces_everything(self):
        s = storage_3_4_5()
        s.apply_snapshot(Snapshot(metadata=SnapshotMetadata(index=10, term=7)))
        assert (s.first_index(), s.last_index(), s.term(10)) == (11, 10, 7)
        with pytest.raises(SnapOutOfDateError):
            s.apply_snapshot(Snapshot(metadata=SnapshotMetadata(index=9, term=7)))


class TestRaftLog:
    def make(self) -> RaftLog:
        s = MemoryStorage()
        s.append(ents((1, 1), (2, 2), (3, 3)))
        return RaftLog(s)

    @pytest.mark.parametrize(
        ("new", "conflict"),
        [
            ([], 0),
            (ents((1, 1), (2, 2), (3, 3)), 0),
            (ents((2, 2), (3, 3), (4, 4), (5, 4)), 4),
            (ents((1, 4), (2, 4)), 1),
            (ents((3, 4), (4, 4)), 3),
        ],
    )
    def test_find_conflict(self, new, conflict):
        assert self.make().find_conflict(new) == conflict

    @pytest.mark.parametrize(
        ("last_index", "term", "up_to_date"),
        [(2, 4, True), (3, 4, True), (4, 4, True), (2, 2, False), (3, 3, True), (4, 3, True), (2, 3, False)],
    )
    def test_is_up_to_date(self, last_index, term, up_to_date):
        assert self.make().is_up_to_date(last_index, term) == up_to_date

    @pytest.mark.parametrize(
        ("index", "term", "want"),
        [(10, 3, 5), (10, 5, 10), (8, 5, 8), (8, 3, 5), (8, 2, 3), (8, 1, 3), (8, 0, 0), (20, 1, 20)],
    )
    def test_find_conflict_by_term(self, index, term, want):
        s = MemoryStorage()
        terms = [1, 1, 1, 3, 3, 4, 4, 5, 5, 5]
        s.append([Entry(t, i + 1) for i, t in enumerate(terms)])
        assert RaftLog(s).find_conflict_by_term(index, term) == want

    def test_maybe_append_commits_up_to_last_new_entry(self):
        log = self.make()
        assert log.maybe_append(3, 3, 5, ents((4, 4), (5, 4))) == 5
        assert log.committed == 5
        assert log.maybe_append(5, 5, 5, []) is None  # term mismatch
        with pytest.raises(AssertionError):
            log.maybe_append(1, 1, 5, ents((2, 9)))  # conflicts with committed

    def test_unstable_entries_become_stable(self):
        log = self.make()
        log.append(ents((4, 4), (5, 4)))
        assert [e.index for e in log.unstable_entries()] == [4, 5]
        log.stable_to(4, 4)
        assert [e.index for e in log.unstable_entries()] == [5]
        log.stable_to(5, 3)  # wrong term: ignored
        assert [e.index for e in log.unstable_entries()] == [5]

    def test_next_ents_respects_applied_and_size(self):
        s = MemoryStorage()
        s.append([Entry(1, i, data=b"x" * 10) for i in range(1, 6)])
        log = RaftLog(s, max_next_ents_size=60)
        log.commit_to(5)
        assert [e.index for e in log.next_ents()] == [1, 2]
        log.applied_to(2)
        assert [e.index for e in log.next_ents()] == [3, 4]
        assert log.has_next_ents()

    def test_term_outside_log_is_zero_and_compacted_raises(self):
        s = storage_3_4_5()
        log = RaftLog(s)
        assert log.term(6) == 0
        assert log.term(2) == 0  # before the dummy entry
        assert log.zero_term_on_compacted(3) == 3

    def test_restore_snapshot_resets_log(self):
        log = self.make()
        log.restore(Snapshot(metadata=SnapshotMetadata(index=10, term=5)))
        assert (log.committed, log.first_index(), log.last_index(), log.last_term()) == (10, 11, 10, 5)


def test_limit_size_keeps_at_least_one_entry():
    big = [Entry(1, i, data=b"x" * 100) for i in range(1, 4)]
    assert len(limit_size(big, 1)) == 1
    assert len(limit_size(big, 250)) == 2
    assert len(limit_size(big, 0)) == 3


class TestTracker:
    def test_inflights_window(self):
        ins = Inflights(3)
        for i in (5, 7, 9):
            ins.add(i)
        assert ins.full()
        with pytest.raises(AssertionError):
            ins.add(11)
        ins.free_le(7)
        assert ins.count() == 1
        ins.free_first_one()
        assert ins.count() == 0

    def test_progress_probe_decrement(self):
        pr = Progress(next_=10, max_inflight=4)
        assert not pr.maybe_decr_to(5, 5)  # stale: not the probed index
        assert pr.maybe_decr_to(9, 5)
        assert pr.next == 6
        assert pr.maybe_decr_to(5, 20)  # follower has more: next = rejected
        assert pr.next == 5

    def test_progress_replicate_decrement_goes_to_match(self):
        pr = Progress(next_=10, max_inflight=4)
        pr.match = 5
        pr.become_replicate()
        pr.next = 10
        assert not pr.maybe_decr_to(5, 5)
        assert pr.maybe_decr_to(8, 8)
        assert pr.next == 6

    def test_progress_pause_rules(self):
        pr = Progress(next_=2, max_inflight=1)
        pr.probe_sent = True
        assert pr.is_paused()
        pr.become_replicate()
        assert not pr.is_paused()
        pr.inflights.add(3)
        assert pr.is_paused()
        pr.become_snapshot(10)
        assert pr.is_paused() and pr.state == ProgressState.SNAPSHOT
        pr.match = 3
        pr.become_probe()
        assert pr.next == 11

    def test_committed_index_is_quorum_median(self):
        t = ProgressTracker(4)
        for i, match in zip((1, 2, 3, 4, 5), (5, 3, 9, 1, 4), strict=True):
            t.voters.add(i)
            t.progress[i] = Progress(match + 1, 4)
            t.progress[i].match = match
        assert t.committed() == 4

    def test_vote_result(self):
        t = ProgressTracker(4)
        t.voters = {1, 2, 3}
        assert t.vote_result({1: True}) == VoteResult.PENDING
        assert t.vote_result({1: True, 2: True}) == VoteResult.WON
        assert t.vote_result({1: True, 2: False, 3: False}) == VoteResult.LOST
        assert t.vote_result({1, 3}) == VoteResult.WON
        assert t.vote_result({1, 4}) == VoteResult.PENDING
