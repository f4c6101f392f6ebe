"""The backend: one LMDB environment holding every bucket of a member's state.

It plays the role of etcd's bbolt backend and lives at the same path (``member/snap/db``), as a single
file (LMDB ``subdir=False``; LMDB adds a ``db-lock`` file beside it).

Durability: the environment is opened with ``sync=True, metasync=False``. Every committed write
transaction fsyncs its data pages; the meta page is written but not separately flushed, so a crash can
lose the last committed transaction but never leaves a torn tree (LMDB falls back to the previous meta
page). That is safe because the consistent index (the last applied raft index) is stored in ``meta`` in
the same transaction as the data it covers: after a crash the WAL is replayed from that index.

Map size: LMDB needs an upper bound for the file. It is address space only (the file grows as pages
are used), so the default is far above any sane ``--quota-backend-bytes`` and growth should never be
needed. As a fallback :meth:`Backend.write` grows the map before a transaction when it is more than 3/4
used; if a single transaction still overflows, it is aborted, the map is doubled and
:class:`BackendGrown` is raised so the caller re-runs the whole batch (:meth:`Backend.run_write` does that
loop). Growing invalidates read transactions open at that moment in other threads (py-lmdb then raises
``lmdb.Error`` from them; it never crashes), which is why the default leaves so much room.

Defrag and snapshot install close and reopen the environment, which invalidates every open
transaction. Reads on the event loop are synchronous, so none is open while the loop swaps the file;
long reads in worker threads (copies, hashes) hold :meth:`Backend.pinned`, and the swap first takes
the backend exclusively (:meth:`Backend.acquire_exclusive`), which waits for them and holds off new ones.

Deferred commit (``write(defer=True)``): the apply path may leave its transaction open so that the
responses to the requests it applied go out before LMDB's commit fsync, as etcd answers from its
in-memory batch before bbolt commits. This is durable because the entries are already in the WAL,
fsync'd on a quorum, and the consistent index makes a restart replay them. Nothing may observe the
state in between: on the thread that owns the open transaction, :meth:`Backend.read`, a plain
:meth:`Backend.write` and :meth:`Backend.commit_deferred` commit it first, so a reader on the event
loop always sees every write whose response may have left; readers in other threads see the last
committed state, which is self-consistent (it carries its own revision and consistent index). The
next ``write(defer=True)`` on that thread goes on in the same transaction instead (as etcd's batch
transaction takes many applies between two bbolt commits), so the owner decides how many batches
one commit covers (the member commits a few milliseconds after the first, `node.py`).

Opening named databases needs its own write transaction in LMDB, so every bucket Quorum knows is
created at open; :meth:`bucket` opens others lazily and must not be called inside a write transaction.
"""

from __future__ import annotations

import fcntl
import os
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import lmdb

__all__ = [
    "DEFAULT_MAP_SIZE", "KNOWN_BUCKETS", "Backend", "BackendGrown", "DeferredWriteLost", "defrag_offline",
]

DEFAULT_MAP_SIZE = 64 << 30
"""Initial LMDB map size: virtual address space, not disk (8x etcd's largest suggested quota)."""

DUPSORT_BUCKETS = frozenset({b"index", b"leasekeys"})
"""Buckets whose keys hold many sorted values (LMDB dupsort)."""

KNOWN_BUCKETS: tuple[bytes, ...] = (
    b"kv",
    b"index",
    b"latest",
    b"meta",
    b"leasekeys",
    b"lease",
    b"auth",
    b"authUsers",
    b"authRoles",
    b"members",
    b"members_removed",
    b"cluster",
    b"alarm",
)
"""Buckets created when the backend opens (etcd's bucket names where one exists)."""

_MAX_DBS = 32
_CONSISTENT_INDEX_KEY = b"consistent_index"
_INDEX_TERM = struct.Struct(">QQ")
_T = TypeVar("_T")


class BackendGrown(Exception):
    """A write transaction overflowed the map; the map was grown and the batch must be re-run."""


class DeferredWriteLost(RuntimeError):
    """A write failed inside a continued deferred transaction: batches already answered were
    aborted with it and only a restart (WAL replay) restores them."""


class Backend:
    """An LMDB environment with Quorum's buckets, opened for crash-safe, batched writes."""

    def __init__(self, path: Path, map_size: int = DEFAULT_MAP_SIZE) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._buckets: dict[bytes, lmdb._Database] = {}
        self.commit_observer: Callable[[float], None] | None = None
        """Called with the seconds each write transaction's commit took (etcd_disk_backend_commit_...)."""
        self._env = self._open(map_size)
        self._gate = threading.Condition()
        self._deferred: lmdb.Transaction | None = None
        self._deferred_owner = 0
        self._pins = 0
        self._exclusive = False

    def _open(self, map_size: int) -> lmdb.Environment:
        env = lmdb.open(
            str(self.path),
            map_size=map_size,
            subdir=False,
            max_dbs=_MAX_DBS,
            sync=True,
            metasync=False,
            readahead=False,
            lock=True,
            max_readers=256,
        )
        self._buckets = {}
        with env.begin(write=True) as txn:
            for name in KNOWN_BUCKETS:
                self._buckets[name] = env.open_db(name, txn=txn, dupsort=name in DUPSORT_BUCKETS)
        return env

    @property
    def env(self) -> lmdb.Environment:
        return self._env

    @property
    def map_size(self) -> int:
        return int(self._env.info()["map_size"])

    def bucket(self, name: bytes, dupsort: bool = False) -> lmdb._Database:
        """The named database ``name``; opened (and created) on first use outside known buckets."""
        db = self._buckets.get(name)
        if db is None:
            db = self._env.open_db(name, dupsort=dupsort)
            self._buckets[name] = db
        return db

    # -- transactions ---------------------------------------------------------------------------------

    def read(self) -> lmdb.Transaction:
        """A consistent read snapshot (use as a context manager, or ``abort()`` it); never blocked by
        the writer. On the thread holding a deferred commit, that commit is done first."""
        if self._deferred is not None and self._deferred_owner == threading.get_ident():
            self.commit_deferred()
        return self._env.begin(write=False, buffers=False)

    @contextmanager
    def write(self, defer: bool = False) -> Iterator[lmdb.Transaction]:
        """One write transaction, committed (and fsync'd) on exit, aborted on error. With ``defer``,
        a successful transaction is left open for :meth:`commit_deferred` (see the module notes),
        and the next deferred write on the same thread continues it: one commit (one fsync) then
        covers several batches.

        A failure inside a continued transaction aborts the batches already in it, whose responses
        may have left: that raises :class:`DeferredWriteLost`, never :class:`BackendGrown` (a re-run
        would restore only the last batch). The caller must stop, as after any failed apply; the
        WAL replays every lost batch at restart, from the consistent index last committed."""
        txn = self._continuable() if defer else None
        continued = txn is not None
        if txn is None:
            if self._deferred is not None:
                self.commit_deferred()
            self._grow_if_needed()
            txn = self._env.begin(write=True, buffers=False)
        try:
            yield txn
        except BaseException as exc:
            txn.abort()
            if continued:
                self._deferred = None
                raise DeferredWriteLost("a write failed inside a deferred transaction") from exc
            if isinstance(exc, lmdb.MapFullError):
                self._grow(self.map_size * 2)
                raise BackendGrown() from None
            raise
        if continued:
            return
        if defer:
            self._deferred = txn
            self._deferred_owner = threading.get_ident()
            return
        try:
            self._commit(txn)
        except lmdb.MapFullError:
            self._grow(self.map_size * 2)
            raise BackendGrown() from None

    def _continuable(self) -> lmdb.Transaction | None:
        """The deferred transaction, when this thread owns it and the map has room to go on in it."""
        txn = self._deferred
        if txn is None or self._deferred_owner != threading.get_ident() or self._needs_growth():
            return None
        return txn

    def _commit(self, txn: lmdb.Transaction) -> None:
        started = time.perf_counter()
        txn.commit()
        if self.commit_observer is not None:
            self.commit_observer(time.perf_counter() - started)

    @property
    def commit_pending(self) -> bool:
        """Whether a deferred write transaction waits for :meth:`commit_deferred`."""
        return self._deferred is not None

    def commit_deferred(self) -> None:
        """Commit (and fsync) the deferred write transaction, if any; only its own thread may.

        A failure here cannot re-run the batch (its results are out): the caller must treat it as a
        failed apply, and a restart replays the batch from the WAL."""
        txn = self._deferred
        if txn is None:
            return
        if self._deferred_owner != threading.get_ident():
            raise RuntimeError("a deferred LMDB commit must be done by the thread that opened it")
        self._deferred = None
        self._commit(txn)
    def run_write(self, fn: Callable[[lmdb.Transaction], _T]) -> _T:
        """Run ``fn`` in a write transaction, re-running it after the map had to grow."""
        while True:
            try:
                with self.write() as txn:
                    return fn(txn)
            except BackendGrown:
                continue

    def _grow_if_needed(self) -> None:
        if self._needs_growth():
            self._grow(self.map_size * 2)

    def _needs_growth(self) -> bool:
        """More than 3/4 of the map in use (no transaction can be that large in practice)."""
        info = self._env.info()
        used = (info["last_pgno"] + 1) * self._env.stat()["psize"]
        return bool(used * 4 > info["map_size"] * 3)

    def _grow(self, new_size: int) -> None:
        self._env.set_mapsize(new_size)

    # -- consistent index -----------------------------------------------------------------------------

    def set_consistent_index(self, txn: lmdb.Transaction, index: int, term: int) -> None:
        """Record the last applied raft entry, in the write transaction that applied it."""
        txn.put(_CONSISTENT_INDEX_KEY, _INDEX_TERM.pack(index, term), db=self._buckets[b"meta"])

    def consistent_index(self, txn: lmdb.Transaction | None = None) -> tuple[int, int]:
        """(index, term) of the last applied raft entry; (0, 0) on a fresh backend."""
        if txn is None:
            with self.read() as rtxn:
                return self.consistent_index(rtxn)
        raw = txn.get(_CONSISTENT_INDEX_KEY, db=self._buckets[b"meta"])
        if raw is None:
            return 0, 0
        index, term = _INDEX_TERM.unpack(raw)
        return int(index), int(term)

    # -- size, copy, defrag, hash ---------------------------------------------------------------------

    def size(self) -> int:
        """Bytes the database file occupies (etcd's ``db_total_size_in_bytes``)."""
        return os.path.getsize(self.path)

    def size_in_use(self) -> int:
        """Bytes of pages holding live data: the file size minus what a defrag would reclaim."""
        with self._env.begin() as txn:
            stats = [self._env.stat()]
            stats.extend(txn.stat(db) for db in self._buckets.values())
        pages = 2  # the two LMDB meta pages
        for st in stats:
            pages += st["branch_pages"] + st["leaf_pages"] + st["overflow_pages"]
        return min(pages * stats[0]["psize"], self.size())

    # -- pins: long reads in worker threads versus reopening the environment ---------------------------

    @contextmanager
    def pinned(self) -> Iterator[None]:
        """Hold the environment open (not swapped) for a read in a worker thread."""
        with self._gate:
            while self._exclusive:
                self._gate.wait()
            self._pins += 1
        try:
            yield
        finally:
            with self._gate:
                self._pins -= 1
                self._gate.notify_all()

    def acquire_exclusive(self) -> None:
        """Wait until no pinned read runs and block new ones (blocking: call from a worker thread)."""
        with self._gate:
            while self._exclusive:
                self._gate.wait()
            self._exclusive = True
            while self._pins:
                self._gate.wait()

    def release_exclusive(self) -> None:
        with self._gate:
            self._exclusive = False
            self._gate.notify_all()

    def copy_to(self, dest: Path, compact: bool = True, durable: bool = True) -> None:
        """A consistent copy of the whole database (a snapshot); ``compact`` drops free pages;
        ``durable=False`` skips the fsync (a temporary copy that is streamed and deleted)."""
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists():
            dest.unlink()
        with self.pinned(), open(dest, "wb") as f:
            self._env.copyfd(f.fileno(), compact=compact)
            f.flush()
            if durable:
                os.fsync(f.fileno())

    def defrag_copy(self) -> Path:
        """First half of a defrag: a compacted copy beside the database (nothing may write meanwhile)."""
        tmp = self.path.with_name(self.path.name + ".defrag")
        self.copy_to(tmp, compact=True)
        return tmp

    def defrag(self) -> None:
        """Rewrite the file without free pages. No transaction may be open while this runs."""
        self.replace_with(self.defrag_copy())

    def replace_with(self, source: Path) -> None:
        """Swap in another database file (a snapshot received from the leader) and reopen."""
        map_size = self.map_size
        self._settle_deferred()
        self._env.close()
        os.replace(source, self.path)
        self._fsync_dir()
        self._env = self._open(map_size)

    def _fsync_dir(self) -> None:
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def hash(
        self, ignore: frozenset[tuple[bytes, bytes]] = frozenset(), txn: lmdb.Transaction | None = None
    ) -> int:
        """CRC-32 over every known bucket's name, keys and values, skipping ``(bucket, key)`` pairs
        (in ``txn`` when given, else in a fresh read transaction).

        Used to compare members' backends; not byte-compatible with etcd's (the layouts differ).
        """
        if txn is None:
            with self.read() as rtxn:
                return self.hash(ignore, rtxn)
        crc = 0
        for name in KNOWN_BUCKETS:
            crc = zlib.crc32(name, crc)
            for key, value in txn.cursor(self._buckets[name]):
                if (name, key) in ignore:
                    continue
                crc = zlib.crc32(value, zlib.crc32(key, crc))
        return crc

    def close(self) -> None:
        self._settle_deferred()
        self._env.close()

    def _settle_deferred(self) -> None:
        """Before the environment closes: commit a deferred transaction on its own thread; from any
        other thread it can only be dropped (closing aborts it; the WAL still holds its entries)."""
        if self._deferred is None:
            return
        if self._deferred_owner == threading.get_ident():
            self.commit_deferred()
        else:
            self._deferred = None

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def defrag_offline(path: Path, on_wait: Callable[[], None] | None = None) -> None:
    """Defragment the database at ``path`` of a member that is not running (``defrag --data-dir``).

    A running member holds a lock on LMDB's lock file; this waits (calling ``on_wait`` once, after a
    second) until nobody does, then holds an exclusive lock for the whole rewrite so the member cannot
    start on the file meanwhile.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"open {path}: no such file or directory")
    lock_path = path.with_name(path.name + "-lock")
    with open(lock_path, "a+b") as lock:
        started = time.monotonic()
        warned = False
        while True:
            try:
                fcntl.lockf(lock, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)
                break
            except OSError:
                if not warned and time.monotonic() - started >= 1.0 and on_wait is not None:
                    on_wait()
                    warned = True
                time.sleep(0.1)
        with Backend(path) as backend:  # our own fcntl lock is per process: LMDB opens alongside it
            backend.defrag()
