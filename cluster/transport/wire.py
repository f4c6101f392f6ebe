"""Constants and helpers shared by both ends of the peer protocol: method paths, gRPC options, URLs.

Frames are (de)serialised by our own code rather than by gRPC's stubs so the receiver can refuse a
malformed frame cleanly (instead of grpc-core failing the call with an opaque error) and so both ends
count the exact bytes on the wire.
"""

from __future__ import annotations

from urllib.parse import urlsplit

SERVICE = "quorumpb.RaftTransport"
STREAM_METHOD = f"/{SERVICE}/Stream"
SNAPSHOT_METHOD = f"/{SERVICE}/Snapshot"
PROBE_METHOD = f"/{SERVICE}/Probe"
MEMBERS_METHOD = f"/{SERVICE}/Members"

DEFAULT_MAX_FRAME_BYTES = 256 * 1024 * 1024
"""Largest frame either side accepts; a MessageBatch is bounded by the sender's batch limits."""

SNAPSHOT_CHUNK_BYTES = 1024 * 1024

REMOVED_MEMBER_DETAILS = "the member has been permanently removed from the cluster"
CLUSTER_MISMATCH_DETAILS = "cluster ID mismatch"
TO_MISMATCH_DETAILS = "to field mismatch"


def grpc_options(max_frame_bytes: int) -> list[tuple[str, int]]:
    """Options for both the peer server and the channels to peers.

    Reconnect backoff is kept short (etcd retries a broken peer stream every 100 ms) and keepalive pings
    find a peer that vanished without closing its connections (a paused or partitioned process).
    """
    return [
        ("grpc.max_receive_message_length", max_frame_bytes),
        ("grpc.max_send_message_length", max_frame_bytes),
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 1000),
        ("grpc.keepalive_time_ms", 10_000),
        ("grpc.keepalive_timeout_ms", 5_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 5_000),
        ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ]


def grpc_target(url: str) -> str:
    """The gRPC target for a peer URL: ``http://10.0.0.1:2380`` → ``10.0.0.1:2380``.

    ``unix://path`` maps to gRPC's ``unix:path``. TLS (https/unixs) maps the same way; the
    channel's credentials decide TLS.
    """
    if "://" not in url:
        return url
    parts = urlsplit(url)
    if parts.scheme in ("http", "https"):
        if not parts.netloc:
            raise ValueError(f"peer URL without host: {url}")
        return parts.netloc
    if parts.scheme in ("unix", "unixs"):
        return f"unix:{parts.netloc}{parts.path}"
    raise ValueError(f"URL scheme must be http, https, unix, or unixs: {url}")


def format_id(member_id: int) -> str:
    """Member and cluster ids as etcd prints them (types.ID.String: lower-case hex, no padding)."""
    return f"{member_id:x}"
