"""Write-ahead log: segmented, preallocated, CRC-chained, group-committed (see `codec` for the format)."""

from .errors import WalCorruptError, WalError
from .wal import WAL, WalSnapshot, WalState

__all__ = ["WAL", "WalCorruptError", "WalError", "WalSnapshot", "WalState"]
