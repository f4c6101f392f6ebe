"""Key-range arithmetic shared by clients and the proxy (etcd's clientv3 GetPrefixRangeEnd)."""

from __future__ import annotations


def prefix_end(prefix: bytes) -> bytes:
    """The smallest key greater than every key starting with ``prefix`` (``\\x00`` when unbounded)."""
    end = bytearray(prefix)
    for i in range(len(end) - 1, -1, -1):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return b"\x00"
