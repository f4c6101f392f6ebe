"""``--force-new-cluster``: restart a member from its own WAL as the only member of its cluster
(etcd 3.4's ``restartAsStandaloneNode``), keeping all its data.

The database is left alone; the raft log is rewritten. Entries after the hard state's commit are
dropped (nobody else may have them, and a one-member cluster must not commit what the old cluster
never did). After the last committed entry come conf changes in the hard state's term: ADD_NODE of
this member when the configuration lacks it as a voter (first, so the configuration is never empty),
then REMOVE_NODE of every other voter and learner, by id. The commit moves to the last of them and
all of it is persisted to the WAL before Raft starts.

Invariant: the configuration the new entries act on is the one Raft itself derives at start-up — the
snapshot's conf state plus every committed conf change in the log after it (`RawNode` replays them) —
so Raft starts with this member as its only voter and campaigns at once, while the apply loop, which
sees the same entries, leaves only this member in the member list. A later restart without the flag
reads the same log and ends in the same configuration.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cluster.raft import decode_conf_change, encode_conf_change
from cluster.raft.types import ConfChange, ConfChangeType, ConfState, Entry, EntryType, HardState
from cluster.server import data_dir, ids

log = logging.getLogger("quorum.server")


@dataclass(frozen=True, slots=True)
class StandaloneLog:
    """The log a member restarts from as a one-member cluster, and what changed to get there."""

    entries: list[Entry]
    """The committed entries kept from the WAL, then `appended`."""
    appended: list[Entry]
    """The conf changes that leave this member alone (committed; to be persisted)."""
    hard_state: HardState
    """The WAL's hard state with its commit moved to the last appended entry."""
    discarded: list[Entry]
    """The uncommitted entries dropped from the end of the WAL's log."""


def conf_state_after(conf: ConfState, entries: Iterable[Entry]) -> ConfState:
    """The configuration after applying the conf changes among `entries`, in order, to `conf`, with
    Raft's single-step rules (an ADD moves a member between voters and learners; UPDATE changes
    nothing Raft tracks)."""
    voters, learners = set(conf.voters), set(conf.learners)
    for entry in entries:
        if entry.type != EntryType.CONF_CHANGE:
            continue
        cc = decode_conf_change(entry.data)
        if cc.node_id == 0:
            continue
        if cc.type == ConfChangeType.ADD_NODE:
            voters.add(cc.node_id)
            learners.discard(cc.node_id)
        elif cc.type == ConfChangeType.ADD_LEARNER_NODE:
            learners.add(cc.node_id)
            voters.discard(cc.node_id)
        elif cc.type == ConfChangeType.REMOVE_NODE:
            voters.discard(cc.node_id)
            learners.discard(cc.node_id)
    return ConfState(voters=tuple(sorted(voters)), learners=tuple(sorted(learners)))


def standalone_log(
    conf: ConfState,
    entries: Sequence[Entry],
    hard_state: HardState,
    member_id: int,
    member_context: bytes,
) -> StandaloneLog:
    """Rewrite a member's log (the entries after its snapshot, whose conf state is `conf`) so that
    it is the only member of its cluster; see the module docstring.

    `member_context` is the conf change context used when the member must be added as a voter.
    """
    commit = hard_state.commit
    keep = next((i for i, e in enumerate(entries) if e.index > commit), len(entries))
    kept, discarded = list(entries[:keep]), list(entries[keep:])
    current = conf_state_after(conf, kept)
    changes: list[ConfChange] = []
    if member_id not in current.voters:
        # etcd adds itself only when it is neither voter nor learner; a learner left alone could
        # never be elected, so Quorum promotes it too.
        changes.append(ConfChange(ConfChangeType.ADD_NODE, member_id, context=member_context))
    others = sorted({*current.voters, *current.learners} - {member_id})
    changes.extend(ConfChange(ConfChangeType.REMOVE_NODE, other) for other in others)
    appended = [
        Entry(hard_state.term, commit + 1 + n, EntryType.CONF_CHANGE, encode_conf_change(cc))
        for n, cc in enumerate(changes)
    ]
    if appended:
        hard_state = HardState(term=hard_state.term, vote=hard_state.vote, commit=appended[-1].index)
    return StandaloneLog(kept + appended, appended, hard_state, discarded)


def restart_as_standalone(wal_dir: str, snap_dir: str, peer_urls: Sequence[object]) -> data_dir.OpenedLog:
    """Open a member's WAL and snapshot as `open_member_log` does, but rewrite the log with
    `standalone_log` and persist the new entries and hard state (one fsync) before returning.

    `peer_urls` go into the member record if the member has to add itself (etcd puts
    ``http://localhost:2380`` there; the advertised URLs are what the member really listens on).
    """
    wal, state, snap = data_dir.read_member_log(wal_dir, snap_dir)
    try:
        member_id, cluster_id = data_dir.decode_wal_metadata(state.metadata)
        rewritten = standalone_log(
            snap.metadata.conf_state if snap is not None else ConfState(),
            state.entries,
            state.hard_state,
            member_id,
            data_dir.member_context(member_id, peer_urls),
        )
        if rewritten.discarded:
            log.info("discarding uncommitted WAL entries",
                     extra={"entry-index": rewritten.discarded[0].index,
                            "commit-index-from-wal": state.hard_state.commit,
                            "number-of-discarded-entries": len(rewritten.discarded)})
        wal.save(rewritten.hard_state, rewritten.appended)
    except BaseException:
        wal.close()
        raise
    log.info("forcing restart member",
             extra={"cluster-id": ids.format_id(cluster_id),
                    "local-member-id": ids.format_id(member_id),
                    "commit-index": rewritten.hard_state.commit})
    return data_dir.opened_log(wal, state.metadata, snap, rewritten.hard_state, rewritten.entries)
