"""Per-peer counters kept by the transport, read by metrics and tests.

Counters only grow; a reader takes a copy (``PeerStats.copy``) so it never sees a half-updated record.
``batches_sent`` next to ``messages_sent`` shows how much batching the sender achieves.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(slots=True)
class PeerStats:
    messages_sent: int = 0
    batches_sent: int = 0
    bytes_sent: int = 0
    messages_received: int = 0
    batches_received: int = 0
    bytes_received: int = 0
    # Messages discarded on the sending side: queue full, or lost with a failed connection.
    messages_dropped: int = 0
    # Messages in a received frame that could not be decoded (the rest of the frame is delivered).
    messages_malformed: int = 0
    snapshots_sent: int = 0
    snapshot_send_failures: int = 0
    snapshots_received: int = 0
    snapshot_bytes_sent: int = 0
    snapshot_bytes_received: int = 0
    # Streams established to the peer (reconnects show up as increments).
    connects: int = 0
    connect_failures: int = 0

    def copy(self) -> PeerStats:
        return replace(self)
