"""Watch: etcd's watchable store (synced/unsynced watchers, history catch-up, fan-out of encoded events)."""

from cluster.watch.hub import HubLimits, WatchHub
from cluster.watch.stream import Watcher, WatchStream

__all__ = ["HubLimits", "WatchHub", "WatchStream", "Watcher"]
