"""Raft snapshot files (`member/snap/*.snap`): CRC-protected, written atomically, newest valid wins."""

from .codec import SnapDecodeError
from .snapshotter import Snapshotter, snap_name

__all__ = ["SnapDecodeError", "Snapshotter", "snap_name"]
