"""Member and cluster ids, derived exactly as etcd 3.4 derives them, so ids match etcd's byte for byte.

* member id: SHA-1 over the member's peer URLs (sorted, concatenated without separator), then the
  cluster token, then — for a member added at run time — the Unix time in decimal seconds; the id is
  the first 8 bytes of the digest read big-endian. A member added at run time (``member add``) is
  hashed with an empty token, as etcd's MemberAdd does: see :func:`added_member_id`.
* cluster id: SHA-1 over the member ids sorted numerically, each as 8 big-endian bytes; again the
  first 8 bytes, big-endian.

etcd prints ids as lower-case hex without padding (Go's ``%x``); :func:`format_id` and :func:`parse_id`
convert both ways.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping


def member_id(peer_urls: Iterable[object], cluster_token: str, now: float | None = None) -> int:
    """The id of a member with these peer URLs in the cluster named ``cluster_token``.

    ``now`` (seconds since the epoch) is given only for members added at run time; the initial members
    of a bootstrapped cluster hash without it, which is why every node can compute every other node's
    id from ``--initial-cluster`` alone.
    """
    data = "".join(sorted(str(url) for url in peer_urls)) + cluster_token
    if now is not None:
        data += str(int(now))
    return int.from_bytes(hashlib.sha1(data.encode()).digest()[:8], "big")


def added_member_id(peer_urls: Iterable[object], now: float) -> int:
    """The id etcd gives a member added at run time at ``now``: empty token, the time in seconds."""
    return member_id(peer_urls, "", now)


def cluster_id(member_ids: Iterable[int]) -> int:
    """The cluster id of a cluster whose members have these ids."""
    data = b"".join(mid.to_bytes(8, "big") for mid in sorted(member_ids))
    return int.from_bytes(hashlib.sha1(data).digest()[:8], "big")


def initial_member_ids(initial_cluster: Mapping[str, Iterable[object]], cluster_token: str) -> dict[str, int]:
    """``{name: member id}`` for a bootstrap ``--initial-cluster`` map (``ServerConfig.initial_peers``).

    Raises ``ValueError`` with etcd's messages when two members collide or one hashes to 0 (raft's "no
    node").
    """
    ids: dict[str, int] = {}
    for name, urls in initial_cluster.items():
        mid = member_id(urls, cluster_token)
        if mid in ids.values():
            raise ValueError(f"member exists with identical ID {format_id(mid)}")
        if mid == 0:
            raise ValueError("cannot use 0 as member id")
        ids[name] = mid
    return ids


def format_id(value: int) -> str:
    """etcd's ``types.ID.String()``: lower-case hex, no padding, no prefix."""
    return f"{value:x}"


def parse_id(text: str) -> int:
    """Inverse of :func:`format_id`."""
    return int(text, 16)
