"""etcd's permission interval rules (auth/range_perm_cache.go with adt.BytesAffineComparable)."""

from __future__ import annotations

import pytest

from cluster.api.gen.authpb import auth_pb2
from cluster.auth.perms import READ, READWRITE, WRITE, UserPermissions


def _perms(*grants: tuple[int, bytes, bytes]) -> UserPermissions:
    merged = UserPermissions()
    for kind, key, end in grants:
        merged.grant(auth_pb2.Permission(permType=kind, key=key, range_end=end))  # type: ignore[arg-type]
    return merged


@pytest.mark.parametrize("key,end,allowed", [
    (b"k", b"", True), (b"k0", b"", False), (b"k", b"k\x00", True), (b"k", b"l", False),
])
def test_a_single_key_permission_covers_that_key_only(key: bytes, end: bytes, allowed: bool) -> None:
    assert _perms((READ, b"k", b"")).allows(key, end, write=False) is allowed


@pytest.mark.parametrize("key,end,allowed", [
    (b"a", b"e", True), (b"b", b"d", True), (b"a", b"f", False), (b"0", b"b", False), (b"d", b"", True),
    (b"e", b"", False),
])
def test_adjoining_ranges_cover_a_range_together_without_gaps(key: bytes, end: bytes, allowed: bool) -> None:
    assert _perms((READ, b"a", b"c"), (READ, b"c", b"e")).allows(key, end, write=False) is allowed


def test_a_gap_between_ranges_is_not_covered() -> None:
    assert not _perms((READ, b"a", b"c"), (READ, b"d", b"e")).allows(b"a", b"e", write=False)


@pytest.mark.parametrize("key,end,allowed", [
    (b"z", b"\x00", True), (b"zz", b"\x00", True), (b"y", b"\x00", False), (b"z", b"zz", True),
    (b"zebra", b"", True),
])
def test_open_ended_permission_covers_every_key_from_its_start(key: bytes, end: bytes, allowed: bool) -> None:
    assert _perms((READ, b"z", b"\x00")).allows(key, end, write=False) is allowed


def test_read_and_write_are_separate_and_readwrite_grants_both() -> None:
    merged = _perms((WRITE, b"w/", b"w0"), (READWRITE, b"k", b""))
    assert merged.allows(b"w/x", b"", write=True) and not merged.allows(b"w/x", b"", write=False)
    assert merged.allows(b"k", b"", write=True) and merged.allows(b"k", b"", write=False)
