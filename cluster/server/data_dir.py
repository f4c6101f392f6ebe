"""Opening a member's data directory: a brand-new member, or a restart from WAL + snapshot.

The layout is etcd's: `member/wal` (our WAL), `member/snap/*.snap` (raft snapshot metadata) and
`member/snap/db` (the LMDB backend). The WAL's metadata record holds the member id and cluster id, so
a restarted member ignores the --initial-* flags and uses what it was born with, as etcd does.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cluster.api.gen.quorumpb import internal_pb2
from cluster.raft import MemoryStorage, bootstrap
from cluster.raft.types import ConfState, Entry, HardState, Snapshot
from cluster.server import ids
from cluster.storage.snap import Snapshotter
from cluster.storage.wal import WAL, WalSnapshot, WalState

_METADATA = struct.Struct(">QQ")


def encode_wal_metadata(member_id: int, cluster_id: int) -> bytes:
    return _METADATA.pack(member_id, cluster_id)


def decode_wal_metadata(data: bytes) -> tuple[int, int]:
    if len(data) != _METADATA.size:
        raise ValueError(f"WAL metadata has {len(data)} bytes, want {_METADATA.size}")
    member_id, cluster_id = _METADATA.unpack(data)
    return member_id, cluster_id


@dataclass
class OpenedLog:
    """What a member starts Raft from."""

    wal: WAL
    storage: MemoryStorage
    member_id: int
    cluster_id: int
    snapshot: Snapshot | None
    hard_state: HardState
    conf_state: ConfState = field(default_factory=ConfState)
    is_new: bool = False
    initial_peers: dict[int, list[str]] = field(default_factory=dict)
    """Peer URLs of the initial members (new members only: nothing is applied yet to learn them)."""


@dataclass(frozen=True)
class InitialMembers:
    """A bootstrap ``--initial-cluster``: member ids by name, the cluster id, and the conf change
    contexts (``quorumpb.Member`` bytes) in the order every member bootstraps them (by member id)."""

    ids: dict[str, int]
    cluster_id: int
    peers: list[tuple[int, bytes]]


def member_context(member_id: int, peer_urls: Iterable[object]) -> bytes:
    """The context of a conf change adding this member: a ``quorumpb.Member`` with its peer URLs."""
    member = internal_pb2.Member(ID=member_id)
    member.raft_attributes.peer_urls.extend(str(u) for u in peer_urls)
    return member.SerializeToString()


def initial_members(peers_by_name: Mapping[str, Iterable[object]], token: str) -> InitialMembers:
    member_ids = ids.initial_member_ids(peers_by_name, token)
    peers = [
        (member_ids[name], member_context(member_ids[name], peers_by_name[name]))
        for name in sorted(member_ids, key=lambda n: member_ids[n])
    ]
    return InitialMembers(member_ids, ids.cluster_id(member_ids.values()), peers)


def prepare_dirs(member_dir: str, wal_dir: str, snap_dir: str) -> None:
    for path in (member_dir, wal_dir, snap_dir):
        os.makedirs(path, mode=0o700, exist_ok=True)


def has_wal(wal_dir: str) -> bool:
    return WAL.exists(Path(wal_dir))


def create_member_log(
    wal_dir: str, member_id: int, cluster_id: int, peers: list[tuple[int, bytes]]
) -> OpenedLog:
    """Create the WAL of a new member and persist the bootstrap entries (the initial members)."""
    storage = MemoryStorage()
    bootstrap(storage, peers)
    wal = WAL.create(Path(wal_dir), encode_wal_metadata(member_id, cluster_id))
    hard_state, _ = storage.initial_state()
    last = storage.last_index()
    entries: list[Entry] = storage.entries(storage.first_index(), last + 1) if last else []
    wal.save(hard_state, entries)
    initial: dict[int, list[str]] = {}
    for peer_id, context in peers:
        record = internal_pb2.Member.FromString(context)
        initial[peer_id] = list(record.raft_attributes.peer_urls)
    return OpenedLog(
        wal, storage, member_id, cluster_id, None, hard_state, is_new=True, initial_peers=initial
    )


def create_joining_member_log(
    wal_dir: str, member_id: int, cluster_id: int, peers: dict[int, list[str]]
) -> OpenedLog:
    """Create the WAL of a member joining a running cluster: no entries, no configuration; the
    leader's log (or snapshot) brings both."""
    storage = MemoryStorage()
    wal = WAL.create(Path(wal_dir), encode_wal_metadata(member_id, cluster_id))
    hard_state, _ = storage.initial_state()
    wal.save(hard_state, [])
    return OpenedLog(
        wal, storage, member_id, cluster_id, None, hard_state, is_new=True, initial_peers=dict(peers)
    )


def open_member_log(wal_dir: str, snap_dir: str) -> OpenedLog:
    """Reopen WAL and newest usable snapshot; rebuild the in-memory raft log from them."""
    wal, state, snap = read_member_log(wal_dir, snap_dir)
    return opened_log(wal, state.metadata, snap, state.hard_state, state.entries)


def read_member_log(wal_dir: str, snap_dir: str) -> tuple[WAL, WalState, Snapshot | None]:
    """Open the WAL from the newest snapshot it has a marker for; return it, what it holds after
    that snapshot, and the snapshot (None when there is none yet)."""
    snapshotter = Snapshotter(Path(snap_dir))
    wal_snaps = WAL.snapshots(Path(wal_dir))
    snap = snapshotter.load_newest_available(wal_snaps) if wal_snaps else None
    marker = WalSnapshot(snap.metadata.index, snap.metadata.term) if snap else WalSnapshot(0, 0)
    wal, state = WAL.open(Path(wal_dir), marker)
    return wal, state, snap


def opened_log(
    wal: WAL, metadata: bytes, snap: Snapshot | None, hard_state: HardState, entries: list[Entry]
) -> OpenedLog:
    """The in-memory raft log of a restarted member: `snap`, then `entries` (all after it)."""
    member_id, cluster_id = decode_wal_metadata(metadata)
    storage = MemoryStorage()
    if snap is not None:
        storage.apply_snapshot(snap)
    storage.set_hard_state(hard_state)
    if entries:
        storage.append(entries)
    return OpenedLog(wal, storage, member_id, cluster_id, snap, hard_state)
