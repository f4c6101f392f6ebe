"""A pure-Python reference model of etcd's MVCC semantics, to check the LMDB store against (and its own
sanity tests)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ModelKV:
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int


@dataclass
class Model:
    """Every revision's full state, kept as a snapshot dict (fine for small tests)."""

    revision: int = 1
    compacted: int = -1
    states: dict[int, dict[bytes, ModelKV]] = field(default_factory=lambda: {1: {}})
    changes: dict[int, int] = field(default_factory=dict)
    """Number of stored changes (sub-revisions) per revision."""
    _pending: dict[bytes, ModelKV] | None = None
    _changed: int = 0

    def begin(self) -> None:
        self._pending = dict(self.states[self.revision])
        self._changed = 0

    def put(self, key: bytes, value: bytes, lease: int = 0) -> ModelKV | None:
        assert self._pending is not None
        rev = self.revision + 1
        prev = self._pending.get(key)
        create, version = (rev, 1) if prev is None else (prev.create_revision, prev.version + 1)
        self._pending[key] = ModelKV(key, value, create, rev, version, lease)
        self._changed += 1
        return prev

    def delete_range(self, key: bytes, end: bytes) -> list[ModelKV]:
        assert self._pending is not None
        gone = [kv for k, kv in sorted(self._pending.items()) if in_range(k, key, end)]
        for kv in gone:
            del self._pending[kv.key]
            self._changed += 1
        return gone

    def end(self) -> int:
        assert self._pending is not None
        if self._changed:
            self.revision += 1
            self.states[self.revision] = self._pending
            self.changes[self.revision] = self._changed
        self._pending = None
        return self.revision

    def range(self, key: bytes, end: bytes, rev: int) -> list[ModelKV]:
        state = self.states[rev]
        return [kv for k, kv in sorted(state.items()) if in_range(k, key, end)]


def in_range(k: bytes, key: bytes, end: bytes) -> bool:
    if not end:
        return k == key
    if end == b"\0":
        return k >= key
    return key <= k < end


def test_model_put_delete_recreate_resets_version_and_create_revision() -> None:
    m = Model()
    m.begin()
    m.put(b"k", b"1")
    assert m.end() == 2
    m.begin()
    m.delete_range(b"k", b"")
    m.put(b"k", b"2")
    assert m.end() == 3
    assert m.range(b"k", b"", 3) == [ModelKV(b"k", b"2", 3, 3, 1, 0)]
    assert m.changes == {2: 1, 3: 2}
