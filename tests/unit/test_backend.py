"""The LMDB backend: buckets, transactions, consistent index, growth, copy/defrag, hash."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from cluster.storage.backend import KNOWN_BUCKETS, Backend, BackendGrown, DeferredWriteLost


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "member" / "snap" / "db"


def test_opens_a_single_file_at_etcds_path_with_every_known_bucket(db_path: Path) -> None:
    with Backend(db_path, map_size=1 << 20) as be:
        assert db_path.is_file()
        with be.read() as txn:
            for name in KNOWN_BUCKETS:
                assert txn.stat(be.bucket(name))["entries"] == 0


def test_write_commits_and_error_aborts(db_path: Path) -> None:
    with Backend(db_path, map_size=1 << 20) as be:
        kv = be.bucket(b"kv")
        with be.write() as txn:
            txn.put(b"a", b"1", db=kv)
        with pytest.raises(ValueError), be.write() as txn:
            txn.put(b"b", b"2", db=kv)
            raise ValueError("boom")
        with be.read() as txn:
            assert txn.get(b"a", db=kv) == b"1"
            assert txn.get(b"b", db=kv) is None


def test_consistent_index_survives_reopen(db_path: Path) -> None:
    with Backend(db_path, map_size=1 << 20) as be:
        assert be.consistent_index() == (0, 0)
        with be.write() as txn:
            be.set_consistent_index(txn, 42, 7)
            assert be.consistent_index(txn) == (42, 7)
    with Backend(db_path, map_size=1 << 20) as be:
        assert be.consistent_index() == (42, 7)


def test_map_grows_and_run_write_retries_the_batch(db_path: Path) -> None:
    with Backend(db_path, map_size=256 << 10) as be:
        kv = be.bucket(b"kv")
        start = be.map_size
        calls = []

        def batch(txn: object) -> int:
            calls.append(1)
            for i in range(400):
                txn.put(b"%08d" % i, b"x" * 1000, db=kv)  # type: ignore[attr-defined]
            return 400

        assert be.run_write(batch) == 400
        assert be.map_size > start
        assert len(calls) >= 2
        with be.read() as txn:
            assert txn.stat(kv)["entries"] == 400


def test_overflowing_write_raises_backend_grown_and_commits_nothing(db_path: Path) -> None:
    with Backend(db_path, map_size=256 << 10) as be:
        kv = be.bucket(b"kv")
        with pytest.raises(BackendGrown), be.write() as txn:
            for i in range(400):
                txn.put(b"%08d" % i, b"x" * 1000, db=kv)
        with be.read() as txn:
            assert txn.stat(kv)["entries"] == 0


def test_defrag_shrinks_file_and_keeps_data(db_path: Path) -> None:
    with Backend(db_path, map_size=64 << 20) as be:
        kv = be.bucket(b"kv")
        with be.write() as txn:
            for i in range(2000):
                txn.put(b"%08d" % i, b"v" * 500, db=kv)
        with be.write() as txn:
            for i in range(1990):
                txn.delete(b"%08d" % i, db=kv)
        before = be.size()
        assert be.size_in_use() < before
        digest = be.hash()
        be.defrag()
        assert be.size() < before
        assert be.hash() == digest
        with be.read() as txn:
            assert txn.stat(be.bucket(b"kv"))["entries"] == 10


def test_copy_is_a_consistent_snapshot_and_replace_with_installs_it(db_path: Path, tmp_path: Path) -> None:
    snap = tmp_path / "snap.db"
    with Backend(db_path, map_size=1 << 20) as be:
        kv = be.bucket(b"kv")
        with be.write() as txn:
            txn.put(b"k", b"old", db=kv)
        be.copy_to(snap)
        with be.write() as txn:
            txn.put(b"k", b"new", db=kv)
        be.replace_with(snap)
        with be.read() as txn:
            assert txn.get(b"k", db=be.bucket(b"kv")) == b"old"


def test_hash_changes_with_data_but_ignores_listed_keys(db_path: Path) -> None:
    with Backend(db_path, map_size=1 << 20) as be:
        h0 = be.hash()
        with be.write() as txn:
            be.set_consistent_index(txn, 5, 1)
        assert be.hash(ignore=frozenset({(b"meta", b"consistent_index")})) == h0
        assert be.hash() != h0


def _get_in_thread(be: Backend, key: bytes) -> bytes | None:
    """What a reader in another thread (a hash, a snapshot copy) sees."""
    seen: list[bytes | None] = []

    def read() -> None:
        with be.read() as txn:
            seen.append(txn.get(key, db=be.bucket(b"kv")))

    worker = threading.Thread(target=read)
    worker.start()
    worker.join(5)
    return seen[0]


def _runtime_errors_in_thread(fn: Callable[[], object]) -> list[RuntimeError]:
    """Run ``fn`` in another thread; the RuntimeErrors it raised."""
    errors: list[RuntimeError] = []

    def run() -> None:
        try:
            fn()
        except RuntimeError as exc:
            errors.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    worker.join(5)
    return errors


def _deferred_put(be: Backend, key: bytes, value: bytes = b"1") -> None:
    """One write transaction left open for ``commit_deferred`` (or continued by the next one)."""
    with be.write(defer=True) as txn:
        txn.put(key, value, db=be.bucket(b"kv"))


def test_deferred_write_is_committed_by_a_read_on_its_own_thread(db_path: Path) -> None:
    with Backend(db_path, map_size=1 << 20) as be:
        kv = be.bucket(b"kv")
        commits: list[float] = []
        be.commit_observer = commits.append
        with be.write(defer=True) as txn:
            txn.put(b"a", b"1", db=kv)
        assert be.commit_pending and not commits
        assert _get_in_thread(be, b"a") is None  # other threads see only committed state
        with be.read() as txn:  # the owner's read commits first: it sees the write
            assert txn.get(b"a", db=kv) == b"1"
        assert not be.commit_pending and len(commits) == 1
        assert _get_in_thread(be, b"a") == b"1"


def test_a_write_after_a_deferred_one_commits_it_first(db_path: Path) -> None:
    with Backend(db_path, map_size=1 << 20) as be:
        kv = be.bucket(b"kv")
        with be.write(defer=True) as txn:
            txn.put(b"a", b"1", db=kv)
        with be.write() as txn:
            assert txn.get(b"a", db=kv) == b"1"
            txn.put(b"b", b"2", db=kv)
        assert not be.commit_pending
        assert _get_in_thread(be, b"a") == b"1" and _get_in_thread(be, b"b") == b"2"


def test_deferred_writes_on_one_thread_share_one_commit(db_path: Path) -> None:
    with Backend(db_path, map_size=1 << 20) as be:
        kv = be.bucket(b"kv")
        commits: list[float] = []
        be.commit_observer = commits.append
        for i in range(3):
            with be.write(defer=True) as txn:
                assert txn.get(b"k0", db=kv) == (b"v" if i else None)  # earlier batches are visible
                txn.put(b"k%d" % i, b"v", db=kv)
        assert be.commit_pending and not commits
        assert _get_in_thread(be, b"k0") is None
        be.commit_deferred()
        assert len(commits) == 1
        assert [_get_in_thread(be, b"k%d" % i) for i in range(3)] == [b"v"] * 3


def test_a_failure_inside_a_continued_deferred_write_loses_every_batch_loudly(db_path: Path) -> None:
    with Backend(db_path, map_size=1 << 20) as be:
        kv = be.bucket(b"kv")
        with be.write() as txn:
            txn.put(b"before", b"1", db=kv)
        _deferred_put(be, b"answered")
        with pytest.raises(DeferredWriteLost), be.write(defer=True) as txn:
            txn.put(b"failing", b"1", db=kv)
            raise ValueError("apply bug")
        assert not be.commit_pending
        with be.read() as txn:  # both batches are gone (a restart replays them), nothing else is
            assert [k for k, _ in txn.cursor(db=kv)] == [b"before"]
        _deferred_put(be, b"after")  # the backend is still usable
        be.commit_deferred()
        assert _get_in_thread(be, b"after") == b"1"


def test_a_deferred_write_from_another_thread_does_not_continue_the_owners(db_path: Path) -> None:
    with Backend(db_path, map_size=1 << 20) as be:
        _deferred_put(be, b"a")
        errors = _runtime_errors_in_thread(lambda: _deferred_put(be, b"b"))  # may not commit the owner's
        assert errors and be.commit_pending
        be.commit_deferred()
        assert _get_in_thread(be, b"a") == b"1" and _get_in_thread(be, b"b") is None


def test_deferred_commit_survives_reopen_and_only_its_thread_may_commit(db_path: Path) -> None:
    be = Backend(db_path, map_size=1 << 20)
    _deferred_put(be, b"a")
    errors = _runtime_errors_in_thread(be.commit_deferred)
    assert errors and be.commit_pending
    be.commit_deferred()
    be.commit_deferred()  # nothing pending: a no-op
    be.close()
    with Backend(db_path, map_size=1 << 20) as again, again.read() as txn:
        assert txn.get(b"a", db=again.bucket(b"kv")) == b"1"


def test_close_commits_a_deferred_write(db_path: Path) -> None:
    be = Backend(db_path, map_size=1 << 20)
    with be.write(defer=True) as txn:
        txn.put(b"a", b"1", db=be.bucket(b"kv"))
    be.close()
    with Backend(db_path, map_size=1 << 20) as again, again.read() as txn:
        assert txn.get(b"a", db=again.bucket(b"kv")) == b"1"
