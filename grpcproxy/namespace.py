"""--namespace: every key a client names is the namespace + the key; every key the cluster returns has
the namespace taken off (etcd's clientv3/namespace, which etcd's proxy wraps its client in).

Ranges follow etcd's prefixInterval: a range end of "\\0" (every key from the start) becomes the end of
the namespace's own prefix, so a client can never reach past its namespace. Requests are rewritten in
place; responses are parsed, stripped and re-encoded, which is why the proxy forwards bytes untouched
when no namespace is set.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from cluster.api import errors
from cluster.api.gen.etcdserverpb import rpc_pb2
from cluster.api.keys import prefix_end


class Namespace:
    def __init__(self, prefix: bytes) -> None:
        self.prefix = prefix
        self._cut = len(prefix)

    def interval(self, key: bytes, end: bytes) -> tuple[bytes, bytes]:
        if end == b"\x00":
            return self.prefix + key, prefix_end(self.prefix)
        return self.prefix + key, (self.prefix + end if end else b"")

    def strip(self, key: bytes) -> bytes:
        return key[self._cut :] if key.startswith(self.prefix) else key

    def _strip_kvs(self, kvs: Iterable[Any]) -> None:
        for kv in kvs:
            kv.key = self.strip(kv.key)

    # ---- KV ----------------------------------------------------------------------------------------
    def range_request(self, req: rpc_pb2.RangeRequest) -> None:
        if not req.key:
            raise errors.EMPTY_KEY()
        req.key, req.range_end = self.interval(req.key, req.range_end)

    def range_response(self, resp: rpc_pb2.RangeResponse) -> None:
        self._strip_kvs(resp.kvs)

    def put_request(self, req: rpc_pb2.PutRequest) -> None:
        if not req.key:
            raise errors.EMPTY_KEY()
        req.key = self.prefix + req.key

    def put_response(self, resp: rpc_pb2.PutResponse) -> None:
        if resp.HasField("prev_kv"):
            self._strip_kvs((resp.prev_kv,))

    def delete_request(self, req: rpc_pb2.DeleteRangeRequest) -> None:
        if not req.key:
            raise errors.EMPTY_KEY()
        req.key, req.range_end = self.interval(req.key, req.range_end)

    def delete_response(self, resp: rpc_pb2.DeleteRangeResponse) -> None:
        self._strip_kvs(resp.prev_kvs)

    def txn_request(self, req: rpc_pb2.TxnRequest) -> None:
        for cmp in req.compare:
            cmp.key, cmp.range_end = self.interval(cmp.key, cmp.range_end)
        for op in (*req.success, *req.failure):
            kind = op.WhichOneof("request")
            if kind == "request_range":
                self.range_request(op.request_range)
            elif kind == "request_put":
                self.put_request(op.request_put)
            elif kind == "request_delete_range":
                self.delete_request(op.request_delete_range)
            elif kind == "request_txn":
                self.txn_request(op.request_txn)

    def txn_response(self, resp: rpc_pb2.TxnResponse) -> None:
        for op in resp.responses:
            kind = op.WhichOneof("response")
            if kind == "response_range":
                self.range_response(op.response_range)
            elif kind == "response_put":
                self.put_response(op.response_put)
            elif kind == "response_delete_range":
                self.delete_response(op.response_delete_range)
            elif kind == "response_txn":
                self.txn_response(op.response_txn)

    # ---- Watch and Lease -----------------------------------------------------------------------------
    def watch_create(self, req: rpc_pb2.WatchCreateRequest) -> None:
        req.key, req.range_end = self.interval(req.key, req.range_end)

    def events(self, events: Iterable[Any]) -> None:
        for ev in events:
            ev.kv.key = self.strip(ev.kv.key)
            if ev.HasField("prev_kv"):
                ev.prev_kv.key = self.strip(ev.prev_kv.key)

    def time_to_live_response(self, resp: rpc_pb2.LeaseTimeToLiveResponse) -> None:
        keys = [self.strip(k) for k in resp.keys if k.startswith(self.prefix)]
        del resp.keys[:]
        resp.keys.extend(keys)
