"""WAL exceptions."""

from __future__ import annotations


class WalError(Exception):
    """A WAL operation failed (already exists, locked, closed, an earlier write failed, ...)."""


class WalCorruptError(WalError):
    """The log on disk is damaged somewhere other than a torn tail; the node must not start on it.

    The message names the segment file and byte offset so an operator can inspect it.
    """
