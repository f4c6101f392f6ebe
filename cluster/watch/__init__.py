"""Watch: etcd's watchable store (synced/unsynced watchers, history catch-up, fan-out of encoded events)."""

from cluster.watch.hub import HubLimits, Watcher, WatchHub, WatchStream

__all__ = ["HubLimits", "WatchHub", "WatchStream", "Watcher"]
