"""What the leader knows about each peer's log (Progress), the flow-control window (Inflights),
and the quorum arithmetic over the current configuration (ProgressTracker).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from enum import IntEnum

from .types import ConfState


class ProgressState(IntEnum):
    PROBE = 0
    """Next index unknown: send one append per heartbeat interval and wait for the answer."""
    REPLICATE = 1
    """Steady state: stream appends optimistically, bounded by the inflight window."""
    SNAPSHOT = 2
    """A snapshot is on its way; appends are paused until it is reported."""


class VoteResult(IntEnum):
    PENDING = 0
    LOST = 1
    WON = 2


class Inflights:
    """Last indexes of the append messages in flight to one peer, oldest first, at most `size`."""

    __slots__ = ("_q", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self._q: deque[int] = deque()

    def add(self, index: int) -> None:
        if len(self._q) >= self.size:
            raise AssertionError("cannot add into a full inflights")
        self._q.append(index)

    def free_le(self, to: int) -> None:
        q = self._q
        while q and q[0] <= to:
            q.popleft()

    def free_first_one(self) -> None:
        if self._q:
            self._q.popleft()

    def full(self) -> bool:
        return len(self._q) >= self.size

    def count(self) -> int:
        return len(self._q)

    def reset(self) -> None:
        self._q.clear()


class Progress:
    """The leader's view of one follower. Invariant: `match < next`."""

    __slots__ = (
        "inflights",
        "is_learner",
        "match",
        "next",
        "pending_snapshot",
        "probe_sent",
        "recent_active",
        "state",
    )

    def __init__(self, next_: int, max_inflight: int, is_learner: bool = False) -> None:
        self.match = 0
        self.next = next_
        self.state = ProgressState.PROBE
        self.pending_snapshot = 0
        self.recent_active = False
        self.probe_sent = False
        self.inflights = Inflights(max_inflight)
        self.is_learner = is_learner

    def __repr__(self) -> str:
        return (
            f"Progress(state={self.state.name}, match={self.match}, next={self.next}, "
            f"learner={self.is_learner}, inflight={self.inflights.count()})"
        )

    def _reset_state(self, state: ProgressState) -> None:
        self.probe_sent = False
        self.pending_snapshot = 0
        self.state = state
        self.inflights.reset()

    def become_probe(self) -> None:
        if self.state == ProgressState.SNAPSHOT:
            pending = self.pending_snapshot
            self._reset_state(ProgressState.PROBE)
            self.next = max(self.match + 1, pending + 1)
        else:
            self._reset_state(ProgressState.PROBE)
            self.next = self.match + 1

    def become_replicate(self) -> None:
        self._reset_state(ProgressState.REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, snapshot_index: int) -> None:
        self._reset_state(ProgressState.SNAPSHOT)
        self.pending_snapshot = snapshot_index

    def maybe_update(self, n: int) -> bool:
        """An acknowledgement up to `n` arrived; False if it was stale."""
        updated = False
        if self.match < n:
            self.match = n
            updated = True
            self.probe_sent = False
        if self.next < n + 1:
            self.next = n + 1
        return updated

    def optimistic_update(self, n: int) -> None:
        self.next = n + 1

    def maybe_decr_to(self, rejected: int, last: int) -> bool:
        """The follower rejected an append at `rejected` and its last index is `last`; back off.
        False when the rejection is stale."""
        if self.state == ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, last + 1), 1)
        self.probe_sent = False
        return True

    def is_paused(self) -> bool:
        if self.state == ProgressState.PROBE:
            return self.probe_sent
        if self.state == ProgressState.REPLICATE:
            return self.inflights.full()
        return True


class ProgressTracker:
    """Progress of every member plus the votes of the current election."""

    __slots__ = ("learners", "max_inflight", "progress", "voters", "votes")

    def __init__(self, max_inflight: int) -> None:
        self.max_inflight = max_inflight
        self.voters: set[int] = set()
        self.learners: set[int] = set()
        self.progress: dict[int, Progress] = {}
        self.votes: dict[int, bool] = {}

    def conf_state(self) -> ConfState:
        return ConfState(voters=tuple(sorted(self.voters)), learners=tuple(sorted(self.learners)))

    def is_singleton(self) -> bool:
        return len(self.voters) == 1

    def quorum(self) -> int:
        return len(self.voters) // 2 + 1

    def committed(self) -> int:
        """The largest index acknowledged by a majority of voters."""
        voters = self.voters
        if not voters:
            # An empty configuration commits everything; only reachable transiently.
            return 1 << 63
        progress = self.progress
        if len(voters) == 1:
            (v,) = voters
            return progress[v].match
        matches = sorted((progress[v].match for v in voters), reverse=True)
        return matches[len(matches) // 2]

    def visit(self) -> Iterator[tuple[int, Progress]]:
        """Members in id order, so message order is deterministic."""
        progress = self.progress
        for i in sorted(progress):
            yield i, progress[i]

    def quorum_active(self) -> bool:
        active = sum(1 for v in self.voters if self.progress[v].recent_active)
        return active >= self.quorum()

    def voter_nodes(self) -> list[int]:
        return sorted(self.voters)

    def learner_nodes(self) -> list[int]:
        return sorted(self.learners)

    def reset_votes(self) -> None:
        self.votes = {}

    def record_vote(self, node_id: int, granted: bool) -> None:
        self.votes.setdefault(node_id, granted)

    def tally_votes(self) -> tuple[int, int, VoteResult]:
        granted = rejected = 0
        for node_id in self.voters:
            v = self.votes.get(node_id)
            if v is None:
                continue
            if v:
                granted += 1
            else:
                rejected += 1
        return granted, rejected, self.vote_result(self.votes)

    def vote_result(self, votes: dict[int, bool] | set[int]) -> VoteResult:
        """Result of an election (or a ReadIndex ack round, given a set of acks) over the voters."""
        if not self.voters:
            return VoteResult.WON
        q = self.quorum()
        if isinstance(votes, set):
            yes = len(self.voters & votes)
            missing = len(self.voters) - yes
            no = 0
        else:
            yes = no = missing = 0
            for v in self.voters:
                r = votes.get(v)
                if r is None:
                    missing += 1
                elif r:
                    yes += 1
                else:
                    no += 1
        if yes >= q:
            return VoteResult.WON
        if yes + missing >= q:
            return VoteResult.PENDING
        return VoteResult.LOST
