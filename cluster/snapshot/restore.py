"""``snapshot restore``: a new member data dir from a snapshot file, offline (etcd's v3Manager.Restore).

What a restored member needs in order to start as a member of a *new* cluster:

* ``member/snap/db``: the snapshot's database with the trailer verified and cut off, its member list
  replaced by the new ``--initial-cluster`` (ids derived from names, peer URLs and the token, as a
  bootstrap derives them) and its consistent index set to N, the number of members;
* ``member/wal``: a WAL whose metadata names the new member and cluster, holding the bootstrap
  entries (one ADD_NODE conf change per member, term 1, indexes 1..N, committed);
* ``member/snap/<term>-<index>.snap``: a raft snapshot at index N, term 1 with every member a voter,
  recorded in the WAL too, so Raft starts from it and never re-applies the bootstrap entries (the
  database already has the membership they describe).

Every member of the new cluster is restored from the same file with the same ``--initial-cluster``
and token, so they agree on ids, log and data. A failed restore removes what it created.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from cluster.raft.types import ConfChange, ConfChangeType, ConfState, Snapshot, SnapshotMetadata
from cluster.server import data_dir, ids
from cluster.server.config import ServerConfig, validate_initial_cluster
from cluster.server.membership import BUCKET, REMOVED_BUCKET, Membership
from cluster.server.urls import parse_urls
from cluster.snapshot.file import (
    SHA256_SIZE,
    SnapshotFileError,
    check_lmdb,
    go_bytes,
    has_checksum,
    read_blocks,
    sha256_of,
    stored_sha256,
)
from cluster.storage.backend import Backend
from cluster.storage.snap import Snapshotter
from cluster.storage.wal import WalSnapshot

Event = Callable[[str, Mapping[str, object]], None]
"""``(message, fields)``: what etcdctl's restore logs (restoring snapshot, added member, ...)."""


@dataclass(frozen=True)
class RestoreConfig:
    snapshot_path: str
    name: str = "default"
    data_dir: str = ""
    wal_dir: str = ""
    peer_urls: str = "http://localhost:2380"
    initial_cluster: str = "default=http://localhost:2380"
    initial_cluster_token: str = "etcd-cluster"
    skip_hash_check: bool = False


def restore(cfg: RestoreConfig, event: Event | None = None) -> None:
    emit = event or (lambda msg, fields: None)
    server = _server_config(cfg)
    initial = data_dir.initial_members(server.initial_peers, cfg.initial_cluster_token)
    data = Path(cfg.data_dir or f"{cfg.name}.etcd")
    if data.exists():
        raise SnapshotFileError(f'data-dir "{data}" exists')
    wal_dir = Path(cfg.wal_dir) if cfg.wal_dir else data / "member" / "wal"
    if cfg.wal_dir and wal_dir.exists():
        raise SnapshotFileError(f'wal-dir "{wal_dir}" exists')
    snap_dir = data / "member" / "snap"
    where = {"path": cfg.snapshot_path, "wal-dir": str(wal_dir), "data-dir": str(data),
             "snap-dir": str(snap_dir)}  # fmt: skip
    emit("restoring snapshot", where)
    try:
        db_path = snap_dir / "db"
        _save_db(Path(cfg.snapshot_path), db_path, cfg.skip_hash_check)
        _rewrite_membership(db_path, initial, emit)
        _save_wal_and_snap(wal_dir, snap_dir, initial, initial.ids[cfg.name])
    except BaseException:
        shutil.rmtree(data, ignore_errors=True)
        if cfg.wal_dir:
            shutil.rmtree(wal_dir, ignore_errors=True)
        raise
    emit("restored snapshot", where)


def _server_config(cfg: RestoreConfig) -> ServerConfig:
    """etcd's VerifyBootstrap checks on name, --initial-cluster and --initial-advertise-peer-urls."""
    try:
        server = replace(ServerConfig(), name=cfg.name, initial_cluster=cfg.initial_cluster,
                         initial_cluster_token=cfg.initial_cluster_token,
                         initial_advertise_peer_urls=parse_urls(cfg.peer_urls))
        validate_initial_cluster(server)
    except ValueError as exc:
        message = str(exc)
        if message.startswith("--initial-cluster has"):
            message += _urls_differ(server)
        raise SnapshotFileError(message) from None
    return server


def _urls_differ(server: ServerConfig) -> str:
    """etcd's netutil detail when the advertised and listed peer URLs differ (restore's message)."""
    ours = sorted(str(u) for u in server.initial_advertise_peer_urls)
    listed = sorted(str(u) for u in server.initial_peers.get(server.name, ()))
    if len(ours) != len(listed):
        quoted = [" ".join(f'"{u}"' for u in urls) for urls in (ours, listed)]
        return f" (len([{quoted[0]}]) != len([{quoted[1]}]))"
    a, b = next(((x, y) for x, y in zip(ours, listed, strict=True) if x != y), ("", ""))
    return f' (resolved urls: "{a}" != "{b}")'


def _save_db(source: Path, dest: Path, skip_hash_check: bool) -> None:
    """Copy the snapshot's database, verifying (unless skipped) and dropping the SHA-256 trailer."""
    try:
        size = source.stat().st_size
    except OSError as err:
        raise SnapshotFileError(f"open {source}: {os.strerror(err.errno or 0).lower()}") from None
    hashed = has_checksum(size)
    if not hashed and not skip_hash_check:
        raise SnapshotFileError("snapshot missing hash but --skip-hash-check=false")
    data_size = size - SHA256_SIZE if hashed else size
    if hashed and not skip_hash_check:
        want, got = stored_sha256(source, size), sha256_of(source, data_size)
        if want != got:
            raise SnapshotFileError(f"expected sha256 {go_bytes(want)}, got {go_bytes(got)}")
    check_lmdb(source, data_size)
    dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(dest, "wb") as out:
        for block in read_blocks(source, data_size):
            out.write(block)
        out.flush()
        os.fsync(out.fileno())


def _rewrite_membership(db_path: Path, initial: data_dir.InitialMembers, emit: Event) -> None:
    """The new member list replaces the old one; the consistent index becomes N (the bootstrap
    entries are already reflected in the database)."""
    with Backend(db_path) as backend:
        membership = Membership(backend, initial.cluster_id)

        def rewrite(txn: object) -> None:
            for bucket in (BUCKET, REMOVED_BUCKET):
                txn.drop(backend.bucket(bucket), delete=False)  # type: ignore[attr-defined]
            membership.members.clear()
            membership.removed.clear()
            for member_id, context in initial.peers:
                cc = ConfChange(type=ConfChangeType.ADD_NODE, node_id=member_id, context=context)
                membership.apply_conf_change(txn, cc)
            backend.set_consistent_index(txn, len(initial.peers), 1)  # type: ignore[arg-type]

        backend.run_write(rewrite)  # type: ignore[arg-type]
        backend.env.sync(True)
    for member_id, _ in initial.peers:
        member = membership.members[member_id]
        emit("added member", {"cluster-id": ids.format_id(initial.cluster_id), "local-member-id": "0",
                              "added-peer-id": ids.format_id(member_id),
                              "added-peer-peer-urls": list(member.raft_attributes.peer_urls)})


def _save_wal_and_snap(
    wal_dir: Path, snap_dir: Path, initial: data_dir.InitialMembers, member_id: int
) -> None:
    data_dir.prepare_dirs(str(snap_dir.parent), str(wal_dir), str(snap_dir))
    opened = data_dir.create_member_log(str(wal_dir), member_id, initial.cluster_id, initial.peers)
    try:
        index = len(initial.peers)
        voters = tuple(peer_id for peer_id, _ in initial.peers)
        snap = Snapshot(SnapshotMetadata(index=index, term=1, conf_state=ConfState(voters=voters)))
        Snapshotter(snap_dir).save(snap)
        opened.wal.save_snapshot(WalSnapshot(index, 1))
    finally:
        opened.wal.close()
