"""KVStore: etcd's MVCC key-value store over the LMDB backend.

One :class:`WriteTxn` wraps one LMDB write transaction for a whole apply batch; inside it each raft
entry is bracketed by ``begin()``/``end()`` and becomes one revision (sub-revisions per change) when it
changed anything. Readers open a :class:`ReadTxn` on an LMDB snapshot and never block the writer.

Revisions: a fresh store is at revision 1 (as etcd); ``compact_revision`` is -1 until the first
compaction. Both live in ``meta`` and are read back at open: nothing is rebuilt in memory. A ReadTxn
takes them from its own snapshot, so readers on other threads than the applier always see a revision
that matches the data.

Threads: LMDB allows one write transaction at a time per environment; :meth:`KVStore.write` and
:meth:`KVStore.compact_batch` block on each other, so run both on the apply thread. After
``Backend.defrag()`` or ``Backend.replace_with()`` call :meth:`KVStore.reload` (bucket handles change).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

from cluster.api.errors import COMPACTED, EMPTY_KEY, FUTURE_REV
from cluster.api.gen.mvccpb import kv_pb2
from cluster.mvcc import compaction
from cluster.mvcc.layout import (
    MAX_STORED_KEY,
    META_REVISION,
    REV,
    KeyDigestCollisionError,
    index_to_rev_key,
    index_value,
    key_of_stored,
    may_be_shared,
    rev_key_to_index,
    seek_at_or_below,
    stored_key,
)
from cluster.mvcc.reads import get_latest, range_at, range_latest
from cluster.storage.backend import Backend

__all__ = ["Change", "KVStore", "RangeResult", "ReadTxn", "WriteTxn"]

_KeyValue = kv_pb2.KeyValue
_Event = kv_pb2.Event
PUT: Final = kv_pb2.Event.PUT
DELETE: Final = kv_pb2.Event.DELETE

_META_REVS: Final = struct.Struct(">qq")
"""meta ``revision``: (current revision, scheduled compact revision); signed so -1 means never."""
_LEASE_ID: Final = struct.Struct(">q")
_INITIAL_REVS: Final = (1, -1)
_INV: Final = REV
_MAX: Final = (1 << 64) - 1


@dataclass(slots=True)
class RangeResult:
    """Serialized KeyValues (key order), the count of keys in the range, the store revision."""

    kvs: list[bytes]
    count: int
    revision: int


class Change(NamedTuple):
    """One change of a revision: ``kv`` is the stored KeyValue (a tombstone holds key + mod_revision)."""

    type: kv_pb2.Event.EventType
    kv: bytes
    prev_kv: bytes | None


@dataclass(slots=True)
class _Buckets:
    kv: Any
    index: Any
    latest: Any
    meta: Any
    leasekeys: Any


def _check_revision(requested: int, current: int, compacted: int) -> int:
    """etcd's order of checks: future first, then 0 means current, then compacted."""
    if requested > current:
        raise FUTURE_REV()
    if requested <= 0:
        return current
    if requested < compacted:
        raise COMPACTED()
    return requested


def _read_revs(txn: Any, meta: Any) -> tuple[int, int]:
    raw = txn.get(META_REVISION, db=meta)
    if raw is None:
        return _INITIAL_REVS
    current, compact = _META_REVS.unpack(raw)
    return int(current), int(compact)


class _Reader:
    """Reads shared by read and write transactions."""

    __slots__ = ("_b", "_txn")

    _b: _Buckets
    _txn: Any

    def _range(
        self, key: bytes, end: bytes, revision: int, limit: int, count_only: bool, view: int, compact: int
    ) -> RangeResult:
        rev = _check_revision(revision, view, compact)
        if rev == view:
            kvs, count = range_latest(self._txn, self._b.latest, key, end, limit, count_only)
        else:
            kvs, count = range_at(self._txn, self._b.index, self._b.kv, key, end, rev, limit, count_only)
        return RangeResult(kvs, count, view)

    def lease_keys(self, lease: int) -> list[bytes]:
        """Keys currently attached to ``lease``, sorted (kept in the ``leasekeys`` bucket by put/delete
        as stored keys; a digest form is resolved through ``latest``, where an attached key is live)."""
        cur = self._txn.cursor(self._b.leasekeys)
        lid = _LEASE_ID.pack(lease)
        if not cur.set_key(lid):
            return []
        keys = list(cur.iternext_dup(keys=False, values=True))
        if any(map(may_be_shared, keys)):
            get, latest = self._txn.get, self._b.latest
            keys = sorted(key_of_stored(get(k, db=latest)) if may_be_shared(k) else k for k in keys)
        return keys

    def _hash_kv(self, rev: int, current: int, compact: int) -> tuple[int, int]:
        """etcd's HashByRev: CRC-32 of every ``kv`` entry a reader at ``rev`` could need, identical on
        members whether or not their physical compaction has finished. Returns (hash, rev used).

        Entries above the compact revision count when <= rev; older ones only when still the key's
        newest live revision <= rev. (zlib CRC-32 over Quorum's layout: comparable between Quorum
        members, not with etcd's numbers.)"""
        if 0 < rev <= compact:
            raise COMPACTED()
        if rev > current:
            raise FUTURE_REV()
        if rev <= 0:
            rev = current
        seek = seek_at_or_below(rev)
        lower = REV.pack(compact + 1, 0) if compact >= 0 else b""
        stop = REV.pack(rev + 1, 0)
        idx = self._txn.cursor(self._b.index)
        crc = zlib.crc32(b"key")
        for k, v in self._txn.cursor(self._b.kv):
            if k >= stop:
                break
            if k < lower:
                if len(k) > 16 or not idx.set_range_dup(stored_key(key_of_stored(v)), seek):
                    continue
                if idx.value() != rev_key_to_index(k):
                    continue
            crc = zlib.crc32(v, zlib.crc32(k, crc))
        return crc, rev

    def history(self, min_rev: int, max_rev: int = 0, limit: int = 0) -> list[tuple[int, bool, bytes]]:
        """Stored changes with ``min_rev <= main <= max_rev`` (0: no upper bound) in revision order, as
        (main revision, is tombstone, KeyValue bytes): what watch catch-up replays."""
        cur = self._txn.cursor(self._b.kv)
        out: list[tuple[int, bool, bytes]] = []
        if not cur.set_range(REV.pack(max(min_rev, 0), 0)):
            return out
        unpack = REV.unpack_from
        for k, v in cur.iternext(keys=True, values=True):
            main = unpack(k)[0]
            if max_rev and main > max_rev:
                break
            out.append((main, len(k) > 16, v))
            if len(out) == limit:
                break
        return out


class ReadTxn(_Reader):
    """A read-only view at the revision committed when it was opened."""

    __slots__ = ("compact_revision", "revision")

    def __init__(self, buckets: _Buckets, txn: Any) -> None:
        self._b = buckets
        self._txn = txn
        self.revision, self.compact_revision = _read_revs(txn, buckets.meta)

    def __enter__(self) -> ReadTxn:
        return self

    def __exit__(self, *exc: object) -> None:
        self._txn.abort()

    def close(self) -> None:
        self._txn.abort()

    def range(
        self, key: bytes, end: bytes = b"", revision: int = 0, limit: int = 0, count_only: bool = False
    ) -> RangeResult:
        return self._range(key, end, revision, limit, count_only, self.revision, self.compact_revision)

    def hash_kv(self, revision: int = 0) -> tuple[int, int]:
        """(hash, revision) for the Maintenance HashKV RPC; see ``_hash_kv``."""
        return self._hash_kv(revision, self.revision, self.compact_revision)


class WriteTxn(_Reader):
    """The apply batch's write view; ``begin()``/``end()`` bracket one revision."""

    __slots__ = ("_backend", "_changes", "_compact", "_dirty", "_rev", "_scratch", "_sub")

    def __init__(self, buckets: _Buckets, txn: Any, backend: Backend) -> None:
        self._b = buckets
        self._txn = txn
        self._backend = backend
        self._rev, self._compact = _read_revs(txn, buckets.meta)
        self._sub = 0
        self._changes: list[Change] = []
        self._dirty = False
        self._scratch = _KeyValue()

    # -- revision bracket -----------------------------------------------------------------------------

    @property
    def revision(self) -> int:
        """The last completed revision (the store revision once this batch commits)."""
        return self._rev

    @property
    def compact_revision(self) -> int:
        return self._compact

    @property
    def has_changes(self) -> bool:
        """True once the current entry changed something (its revision is ``revision + 1``)."""
        return self._sub > 0

    def begin(self) -> None:
        """Start the changes of one raft entry."""
        self._sub = 0
        self._changes = []

    def end(self) -> int:
        """Finish the entry: the revision advances only if something changed. Returns the revision."""
        if self._sub:
            self._rev += 1
            self._sub = 0
            self._dirty = True
        return self._rev

    @property
    def changes(self) -> list[Change]:
        """Changes of the current (or just ended) revision, in sub-revision order."""
        return self._changes

    @property
    def events(self) -> list[kv_pb2.Event]:
        """``changes`` as mvccpb Events (prev_kv filled); built on demand for the watch layer."""
        out = []
        for ch in self._changes:
            ev = _Event(type=ch.type)
            ev.kv.ParseFromString(ch.kv)
            if ch.prev_kv is not None:
                ev.prev_kv.ParseFromString(ch.prev_kv)
            out.append(ev)
        return out

    # -- reads ----------------------------------------------------------------------------------------

    def range(
        self, key: bytes, end: bytes = b"", revision: int = 0, limit: int = 0, count_only: bool = False
    ) -> RangeResult:
        """Reads see this txn's writes; with changes pending the view is revision + 1 (as etcd)."""
        view = self._rev + 1 if self._sub else self._rev
        return self._range(key, end, revision, limit, count_only, view, self._compact)

    # -- writes ---------------------------------------------------------------------------------------

    def put(self, key: bytes, value: bytes, lease: int = 0) -> kv_pb2.KeyValue | None:
        """Write a new version of ``key``; returns the previous live KeyValue, if any."""
        if not key:
            raise EMPTY_KEY()
        b = self._b
        txn = self._txn
        main = self._rev + 1
        sub = self._sub
        skey = key if len(key) < MAX_STORED_KEY else self.unshared_stored_key(key)
        prev_bytes: bytes | None = txn.get(skey, db=b.latest)
        if prev_bytes is None:
            prev = None
            create, version, prev_lease = main, 1, 0
        else:
            prev = _KeyValue.FromString(prev_bytes)
            create, version, prev_lease = prev.create_revision, prev.version + 1, prev.lease
        kv = self._scratch  # reused: setting six fields beats building a message per put
        kv.key = key
        kv.value = value
        kv.create_revision = create
        kv.mod_revision = main
        kv.version = version
        kv.lease = lease
        data = kv.SerializeToString()
        if not txn.put(REV.pack(main, sub), data, db=b.kv, append=True):
            raise RuntimeError(f"mvcc: revision {main}.{sub} is not above the stored revisions")
        txn.put(skey, _INV.pack(_MAX - main, _MAX - sub) + b"p", db=b.index, dupdata=True)
        txn.put(skey, data, db=b.latest)
        if prev_lease != lease:
            if prev_lease:
                txn.delete(_LEASE_ID.pack(prev_lease), skey, db=b.leasekeys)
            if lease:
                txn.put(_LEASE_ID.pack(lease), skey, db=b.leasekeys, dupdata=True)
        self._sub = sub + 1
        self._changes.append(Change(PUT, data, prev_bytes))
        return prev

    def unshared_stored_key(self, key: bytes) -> bytes:
        """The stored key of a key of 511 bytes or more, after checking that no other user key's
        current or past revisions use it (``latest`` holds the live one, ``index`` the newest);
        raises :class:`KeyDigestCollisionError` otherwise. A Txn checks its puts with it before
        applying any op, so a refused Txn writes nothing."""
        skey = stored_key(key)
        txn, b = self._txn, self._b
        owner = txn.get(skey, db=b.latest)
        if owner is None:
            cur = txn.cursor(b.index)
            if cur.set_key(skey):
                owner = txn.get(index_to_rev_key(cur.value()), db=b.kv)
        if owner is not None and key_of_stored(owner) != key:
            raise KeyDigestCollisionError()
        return skey

    def delete_range(self, key: bytes, end: bytes = b"") -> list[kv_pb2.KeyValue]:
        """Delete the live keys of the range (tombstones at this revision); returns what was deleted."""
        b = self._b
        txn = self._txn
        if end:
            olds, _ = range_latest(txn, b.latest, key, end, 0, False)
        else:
            one = get_latest(txn, b.latest, key)
            olds = [] if one is None else [one]
        main = self._rev + 1
        prevs = []
        for old in olds:
            prev = _KeyValue.FromString(old)
            k = prev.key
            sub = self._sub
            tomb = _KeyValue(key=k, mod_revision=main).SerializeToString()
            if not txn.put(REV.pack(main, sub) + b"t", tomb, db=b.kv, append=True):
                raise RuntimeError(f"mvcc: revision {main}.{sub} is not above the stored revisions")
            skey = stored_key(k)
            txn.put(skey, index_value(main, sub, True), db=b.index, dupdata=True)
            txn.delete(skey, db=b.latest)
            if prev.lease:
                txn.delete(_LEASE_ID.pack(prev.lease), skey, db=b.leasekeys)
            self._sub = sub + 1
            self._changes.append(Change(DELETE, tomb, old))
            prevs.append(prev)
        return prevs

    def compact(self, rev: int) -> None:
        """Schedule compaction at ``rev``: reads below it fail from now on; the physical deletion runs
        in later batches (:meth:`KVStore.compact_batch`)."""
        if rev <= self._compact:
            raise COMPACTED()
        if rev > (self._rev + 1 if self._sub else self._rev):
            raise FUTURE_REV()
        self._compact = rev
        self._dirty = True

    def set_consistent_index(self, index: int, term: int) -> None:
        self._backend.set_consistent_index(self._txn, index, term)

    def _flush(self) -> None:
        self.end()
        if self._dirty:
            self._txn.put(META_REVISION, _META_REVS.pack(self._rev, self._compact), db=self._b.meta)


class KVStore:
    """The MVCC store: the committed revision, readers and the batch writer."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.before_read: Callable[[], None] | None = getattr(self, "before_read", None)
        """Called before each :meth:`read` (the member applies entries it held back, see
        ``QuorumNode._may_hold_apply``); kept across :meth:`reload`."""
        self._b = self._buckets()
        with backend.read() as txn:
            self._current, self._compact = _read_revs(txn, self._b.meta)

    def _buckets(self) -> _Buckets:
        bk = self.backend.bucket
        return _Buckets(bk(b"kv"), bk(b"index"), bk(b"latest"), bk(b"meta"), bk(b"leasekeys"))

    def reload(self) -> None:
        """Re-read state after the backend file was replaced (snapshot install, defrag)."""
        self.__init__(self.backend)  # type: ignore[misc]

    @property
    def current_revision(self) -> int:
        return self._current

    @property
    def compact_revision(self) -> int:
        """The scheduled compaction revision (-1 before the first compaction)."""
        return self._compact

    def read(self) -> ReadTxn:
        """A read view on a fresh snapshot; use it as a context manager (or ``close()`` it)."""
        if self.before_read is not None:
            self.before_read()
        return ReadTxn(self._b, self.backend.read())

    def range(
        self, key: bytes, end: bytes = b"", revision: int = 0, limit: int = 0, count_only: bool = False
    ) -> RangeResult:
        """One range on a fresh snapshot (a serializable read)."""
        txn = self.backend.read()
        try:
            return ReadTxn(self._b, txn).range(key, end, revision, limit, count_only)
        finally:
            txn.abort()

    @contextmanager
    def write(self, defer_commit: bool = False) -> Iterator[WriteTxn]:
        """The batch writer; commits on exit (or leaves the commit to ``backend.commit_deferred``, see
        :class:`~cluster.storage.backend.Backend`). On :class:`~cluster.storage.backend.BackendGrown`
        nothing was committed and the caller re-runs the batch."""
        with self.backend.write(defer=defer_commit) as txn:
            w = WriteTxn(self._b, txn, self.backend)
            yield w
            w._flush()
        self._current = w.revision
        self._compact = w.compact_revision

    # -- compaction -----------------------------------------------------------------------------------

    @property
    def compaction_pending(self) -> bool:
        with self.backend.read() as txn:
            return compaction.pending(txn, self._b.meta, self._compact)

    def compact_batch(self, limit: int = 10000) -> bool:
        """Physically remove up to ``limit`` compacted revisions in one write transaction (not inside
        another write). Returns True when no compaction work remains."""
        b = self._b

        def step(txn: Any) -> bool:
            target = _read_revs(txn, b.meta)[1]
            return compaction.run_batch(txn, b.kv, b.index, b.meta, target, limit)

        return self.backend.run_write(step)

    def compact(self, rev: int) -> None:
        """Schedule compaction at ``rev`` and run it to completion (tests, tools)."""
        with self.write() as w:
            w.compact(rev)
        while not self.compact_batch():
            pass

    def consistent_index(self) -> tuple[int, int]:
        return self.backend.consistent_index()
