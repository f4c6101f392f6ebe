"""Unique ids for proposals, like etcd's idutil: the member's low 16 bits, then a millisecond
timestamp, then a counter. Ids from one member never repeat across restarts (the clock moves on) and
ids of different members never collide (different prefixes)."""

from __future__ import annotations

import time


class RequestIdGenerator:
    __slots__ = ("_next",)

    _TS_BITS = 40
    _COUNT_BITS = 8

    def __init__(self, member_id: int, now_ms: int | None = None) -> None:
        ms = int(time.time() * 1000) if now_ms is None else now_ms
        prefix = (member_id & 0xFFFF) << (self._TS_BITS + self._COUNT_BITS)
        suffix = (ms & ((1 << self._TS_BITS) - 1)) << self._COUNT_BITS
        self._next = prefix | suffix

    def next(self) -> int:
        self._next += 1
        return self._next & 0xFFFF_FFFF_FFFF_FFFF
