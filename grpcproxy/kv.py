"""etcdserverpb.KV through the proxy: the namespace applied, serializable latest-revision ranges served
from the range cache, every write invalidating what it touched once the cluster has answered it.

Without a namespace and without a cache every call is forwarded as bytes; otherwise only what must be
looked at is parsed (the request of a cached range, the keys of a write).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc

from cluster.api import errors
from cluster.api import grpc_names as names
from cluster.api.gen.etcdserverpb import rpc_pb2
from grpcproxy.cache import RangeCache
from grpcproxy.namespace import Namespace
from grpcproxy.passthrough import UnaryCall, forward_unary, unary_handler
from grpcproxy.upstream import Upstream, identity_of


def written_ranges(req: rpc_pb2.TxnRequest) -> Iterable[tuple[bytes, bytes]]:
    """Every (key, range_end) a Txn may write, in either branch."""
    for op in (*req.success, *req.failure):
        kind = op.WhichOneof("request")
        if kind == "request_put":
            yield op.request_put.key, b""
        elif kind == "request_delete_range":
            yield op.request_delete_range.key, op.request_delete_range.range_end
        elif kind == "request_txn":
            yield from written_ranges(op.request_txn)


class KVProxy:
    def __init__(self, upstream: Upstream, namespace: Namespace | None, cache: RangeCache | None) -> None:
        self._ns = namespace
        self._cache = cache
        self._forward: dict[str, UnaryCall] = {
            path: forward_unary(upstream, path)
            for path in (names.KV_RANGE, names.KV_PUT, names.KV_DELETE_RANGE, names.KV_TXN, names.KV_COMPACT)
        }

    async def _rewrite(
        self, path: str, request: bytes, context: Any, parsed: Any, response_class: Any, strip: Any
    ) -> tuple[bytes, Any]:
        """Forward `parsed` (namespaced by the caller) and return the response bytes with the
        namespace stripped."""
        raw = await self._forward[path](parsed.SerializeToString() if self._ns else request, context)
        if self._ns is None:
            return raw, None
        response = response_class.FromString(raw)
        strip(response)
        return response.SerializeToString(), response

    def cached_range(self, request: bytes, context: Any) -> bytes | None:
        """The RPC engine's fast path: a cache hit answered without parsing the request or starting a
        task. Only cacheable requests are ever stored, so finding these exact bytes for this caller
        is enough; anything else (None) goes through `range`."""
        cache = self._cache
        if cache is None:
            return None
        return cache.hit((identity_of(context), request))

    async def range(self, request: bytes, context: Any) -> bytes:
        cache, ns = self._cache, self._ns
        if cache is None and ns is None:
            return await self._forward[names.KV_RANGE](request, context)
        req = rpc_pb2.RangeRequest.FromString(request)
        if ns is not None:
            await self._namespaced(context, ns.range_request, req)
        cacheable = cache is not None and cache.enabled and req.serializable and req.revision == 0
        if not cacheable or cache is None:
            raw, _ = await self._rewrite(
                names.KV_RANGE,
                request,
                context,
                req,
                rpc_pb2.RangeResponse,
                ns.range_response if ns else None,
            )
            return raw
        ck = (identity_of(context), request)
        hit = cache.get(ck)
        if hit is not None:
            return hit
        ticket = cache.ticket()
        raw, _ = await self._rewrite(
            names.KV_RANGE, request, context, req, rpc_pb2.RangeResponse, ns.range_response if ns else None
        )
        cache.put(ck, req.key, req.range_end, raw, ticket)
        return raw

    async def put(self, request: bytes, context: Any) -> bytes:
        if self._cache is None and self._ns is None:
            return await self._forward[names.KV_PUT](request, context)
        req = rpc_pb2.PutRequest.FromString(request)
        if self._ns is not None:
            await self._namespaced(context, self._ns.put_request, req)
        try:
            raw, _ = await self._rewrite(
                names.KV_PUT, request, context, req, rpc_pb2.PutResponse, self._ns and self._ns.put_response
            )
        finally:
            self._invalidate([(req.key, b"")])
        return raw

    async def delete_range(self, request: bytes, context: Any) -> bytes:
        if self._cache is None and self._ns is None:
            return await self._forward[names.KV_DELETE_RANGE](request, context)
        req = rpc_pb2.DeleteRangeRequest.FromString(request)
        if self._ns is not None:
            await self._namespaced(context, self._ns.delete_request, req)
        try:
            raw, _ = await self._rewrite(
                names.KV_DELETE_RANGE, request, context, req, rpc_pb2.DeleteRangeResponse,
                self._ns and self._ns.delete_response,
            )  # fmt: skip
        finally:
            self._invalidate([(req.key, req.range_end)])
        return raw

    async def txn(self, request: bytes, context: Any) -> bytes:
        if self._cache is None and self._ns is None:
            return await self._forward[names.KV_TXN](request, context)
        req = rpc_pb2.TxnRequest.FromString(request)
        if self._ns is not None:
            await self._namespaced(context, self._ns.txn_request, req)
        try:
            raw, _ = await self._rewrite(
                names.KV_TXN, request, context, req, rpc_pb2.TxnResponse, self._ns and self._ns.txn_response
            )
        finally:
            self._invalidate(written_ranges(req))
        return raw

    def _invalidate(self, ranges: Iterable[tuple[bytes, bytes]]) -> None:
        """Runs whether the write succeeded or not: a failed or timed-out write may still have been
        applied."""
        if self._cache is not None:
            for key, end in ranges:
                self._cache.invalidate(key, end)

    @staticmethod
    async def _namespaced(context: Any, rewrite: Any, req: Any) -> None:
        try:
            rewrite(req)
        except errors.EtcdError as exc:
            await context.abort(exc.code, exc.message)

    def handlers(self) -> dict[str, grpc.RpcMethodHandler]:
        return {
            names.KV_RANGE: unary_handler(_with_answer_now(self.range, self.cached_range)),
            names.KV_PUT: unary_handler(self.put),
            names.KV_DELETE_RANGE: unary_handler(self.delete_range),
            names.KV_TXN: unary_handler(self.txn),
        }


def _with_answer_now(call: UnaryCall, answer_now: Any) -> UnaryCall:
    """`call` carrying a synchronous fast path for the RPC engine (`cluster.rpc.context.answer_now_of`)."""

    async def unary(request: bytes, context: Any) -> bytes:
        return await call(request, context)

    unary.answer_now = answer_now  # type: ignore[attr-defined]
    return unary
