"""Snapshot files offline: what ``quorumctl snapshot status`` and ``snapshot restore`` read and build.

A snapshot file is what Maintenance.Snapshot streams: a consistent copy of the member's LMDB backend
followed by the SHA-256 of those bytes (etcd appends the same digest to its bbolt copy, and etcdctl
recognises it by the file size: ``size % 512 == 32``). See ``file.py`` and ``restore.py``.
"""
