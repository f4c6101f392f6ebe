"""etcd's grpc-gateway on the client port: POST /v3/<service>/<method> with a JSON body.

Requests are decoded as grpc-gateway's jsonpb decodes them (`jsonpb.py`) and dispatched to the very
handlers the gRPC server registered (`Server.lookup`), with a context of the engine's own kind; there
is no loopback gRPC hop as in etcd. Errors are grpc-gateway's: `{"error": msg, "message": msg,
"code": grpc code}` with the HTTP status its HTTPStatusFromCode gives.

Streaming methods (watch, lease keep-alive, election observe, snapshot) answer with a chunked body of
newline-terminated `{"result": ...}` objects; a client-streaming body may hold several JSON objects
one after another, taken as they arrive. An error after the first result arrives as a final
`{"error": {...}}` object, as grpc-gateway writes it.
"""

from __future__ import annotations

import asyncio
import codecs
import inspect
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf.message import Message

from cluster.api.grpc_names import METHODS, MethodInfo
from cluster.http.protocol import REASONS, Headers, HttpRequest, plain_error
from cluster.rpc.context import Abort, ServicerContext, behaviour_of, send_responses
from cluster.rpc.server import Server
from cluster.services.jsonpb import (
    DECODER,
    GatewayError,
    dumps,
    first_value,
    go_json_error,
    parse_request,
    to_json,
)

log = logging.getLogger("quorum.gateway")

ROUTES: dict[str, str] = {
    "/v3/kv/range": "/etcdserverpb.KV/Range",
    "/v3/kv/put": "/etcdserverpb.KV/Put",
    "/v3/kv/deleterange": "/etcdserverpb.KV/DeleteRange",
    "/v3/kv/txn": "/etcdserverpb.KV/Txn",
    "/v3/kv/compaction": "/etcdserverpb.KV/Compact",
    "/v3/watch": "/etcdserverpb.Watch/Watch",
    "/v3/lease/grant": "/etcdserverpb.Lease/LeaseGrant",
    "/v3/lease/revoke": "/etcdserverpb.Lease/LeaseRevoke",
    "/v3/kv/lease/revoke": "/etcdserverpb.Lease/LeaseRevoke",
    "/v3/lease/keepalive": "/etcdserverpb.Lease/LeaseKeepAlive",
    "/v3/lease/timetolive": "/etcdserverpb.Lease/LeaseTimeToLive",
    "/v3/kv/lease/timetolive": "/etcdserverpb.Lease/LeaseTimeToLive",
    "/v3/lease/leases": "/etcdserverpb.Lease/LeaseLeases",
    "/v3/kv/lease/leases": "/etcdserverpb.Lease/LeaseLeases",
    "/v3/cluster/member/add": "/etcdserverpb.Cluster/MemberAdd",
    "/v3/cluster/member/remove": "/etcdserverpb.Cluster/MemberRemove",
    "/v3/cluster/member/update": "/etcdserverpb.Cluster/MemberUpdate",
    "/v3/cluster/member/list": "/etcdserverpb.Cluster/MemberList",
    "/v3/cluster/member/promote": "/etcdserverpb.Cluster/MemberPromote",
    "/v3/maintenance/alarm": "/etcdserverpb.Maintenance/Alarm",
    "/v3/maintenance/status": "/etcdserverpb.Maintenance/Status",
    "/v3/maintenance/defragment": "/etcdserverpb.Maintenance/Defragment",
    # Hash and HashKV share a path in etcd's mapping; the gateway's mux takes the first registered.
    "/v3/maintenance/hash": "/etcdserverpb.Maintenance/Hash",
    "/v3/maintenance/snapshot": "/etcdserverpb.Maintenance/Snapshot",
    "/v3/maintenance/transfer-leadership": "/etcdserverpb.Maintenance/MoveLeader",
    "/v3/auth/enable": "/etcdserverpb.Auth/AuthEnable",
    "/v3/auth/disable": "/etcdserverpb.Auth/AuthDisable",
    "/v3/auth/authenticate": "/etcdserverpb.Auth/Authenticate",
    "/v3/auth/user/add": "/etcdserverpb.Auth/UserAdd",
    "/v3/auth/user/get": "/etcdserverpb.Auth/UserGet",
    "/v3/auth/user/list": "/etcdserverpb.Auth/UserList",
    "/v3/auth/user/delete": "/etcdserverpb.Auth/UserDelete",
    "/v3/auth/user/changepw": "/etcdserverpb.Auth/UserChangePassword",
    "/v3/auth/user/grant": "/etcdserverpb.Auth/UserGrantRole",
    "/v3/auth/user/revoke": "/etcdserverpb.Auth/UserRevokeRole",
    "/v3/auth/role/add": "/etcdserverpb.Auth/RoleAdd",
    "/v3/auth/role/get": "/etcdserverpb.Auth/RoleGet",
    "/v3/auth/role/list": "/etcdserverpb.Auth/RoleList",
    "/v3/auth/role/delete": "/etcdserverpb.Auth/RoleDelete",
    "/v3/auth/role/grant": "/etcdserverpb.Auth/RoleGrantPermission",
    "/v3/auth/role/revoke": "/etcdserverpb.Auth/RoleRevokePermission",
    "/v3/election/campaign": "/v3electionpb.Election/Campaign",
    "/v3/election/proclaim": "/v3electionpb.Election/Proclaim",
    "/v3/election/leader": "/v3electionpb.Election/Leader",
    "/v3/election/observe": "/v3electionpb.Election/Observe",
    "/v3/election/resign": "/v3electionpb.Election/Resign",
    "/v3/lock/lock": "/v3lockpb.Lock/Lock",
    "/v3/lock/unlock": "/v3lockpb.Lock/Unlock",
}
"""etcd 3.4's grpc-gateway patterns (every one is POST) and the gRPC method each calls."""

HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 408,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 412,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}
"""grpc-gateway's HTTPStatusFromCode."""

JSON = "application/json"
_RESULT_HEADERS: Headers = (("Content-Type", JSON), ("Grpc-Metadata-Content-Type", "application/grpc"))


def error_body(code: grpc.StatusCode, message: str) -> bytes:
    return dumps({"error": message, "message": message, "code": code.value[0]})


def _stream_error(code: grpc.StatusCode, message: str) -> bytes:
    http = HTTP_STATUS.get(code, 500)
    return dumps({"error": {"grpc_code": code.value[0], "http_code": http, "message": message,
                            "http_status": REASONS.get(http, "")}})  # fmt: skip


# ---- the call --------------------------------------------------------------------------------------
class HttpCall:
    """The `Stream` a handler's context writes to: each message becomes one `{"result":...}` line."""

    def __init__(self, request: HttpRequest, info: MethodInfo, headers: Headers) -> None:
        self.request = request
        self.info = info
        self.headers = headers
        self.cancelled = False
        self.finished = False
        self.wrote = False

    async def write(self, message: Any) -> None:
        if self.finished:
            raise asyncio.CancelledError()
        if isinstance(message, bytes):
            message = self.info.response_class.FromString(message)
        if not self.wrote:
            self.wrote = True
            self.request.start_stream(200, self.headers)
        try:
            await self.request.write_chunk(dumps({"result": to_json(message)}) + b"\n")
        except ConnectionResetError:
            self.cancelled = True
            raise asyncio.CancelledError() from None

    async def read(self) -> Any:
        raise NotImplementedError("the gateway passes requests as an iterator")


class JsonGateway:
    def __init__(self, server: Server) -> None:
        self._server = server

    async def serve(self, request: HttpRequest, path: str, cors: Headers) -> None:
        grpc_path = ROUTES.get(path)
        if grpc_path is None:
            plain_error(request, 404, "Not Found", cors)
            return
        if request.method != "POST":
            plain_error(request, 405, "Method Not Allowed", cors)
            return
        info = METHODS[grpc_path]
        handler = self._server.lookup(grpc_path)
        headers = [*cors, *_RESULT_HEADERS]
        call = HttpCall(request, info, headers)
        ctx = ServicerContext(call, _metadata(request), _peer(request), None)
        try:
            if info.client_streaming:
                arg: Any = await self._stream_requests(request, info)
            else:
                arg = self._unary_arg(await self._json_body(request), info, handler)
            if handler is None:
                raise Abort(grpc.StatusCode.UNIMPLEMENTED, "unknown service")
            code, details = await self._run(handler, info, arg, ctx, call, request)
        except GatewayError as exc:
            code, details = exc.code, exc.message
        finally:
            ctx.run_done_callbacks()
        self._server.stats.count(grpc_path, code.value[0])
        if call.wrote:
            if code is not grpc.StatusCode.OK and not call.cancelled:
                await request.write_chunk(_stream_error(code, details))
            request.end_stream()
        elif code is not grpc.StatusCode.OK:
            request.respond(
                HTTP_STATUS.get(code, 500), [*cors, ("Content-Type", JSON)], error_body(code, details)
            )
        elif info.server_streaming:
            request.start_stream(200, headers)
            request.end_stream()

    async def _run(
        self,
        handler: grpc.RpcMethodHandler,
        info: MethodInfo,
        arg: Any,
        ctx: ServicerContext,
        call: HttpCall,
        request: HttpRequest,
    ) -> tuple[grpc.StatusCode, str]:
        try:
            if info.client_streaming and handler.request_deserializer is None:
                arg = _serialized(arg)
            elif not info.client_streaming and handler.request_deserializer is not None:
                arg = handler.request_deserializer(arg)
            result = behaviour_of(handler)(arg, ctx)
            if handler.response_streaming:
                await send_responses(result, call.write)
            else:
                if inspect.isawaitable(result):
                    result = await result
                if ctx.code_ is None or ctx.code_ is grpc.StatusCode.OK:
                    if isinstance(result, bytes):
                        result = info.response_class.FromString(result)
                    request.respond(200, call.headers, dumps(to_json(result)))
        except Abort as exc:
            return exc.code, exc.details
        except asyncio.CancelledError:
            if call.cancelled:
                return grpc.StatusCode.CANCELLED, "context canceled"
            raise
        except NotImplementedError as exc:
            return ctx.code_ or grpc.StatusCode.UNIMPLEMENTED, ctx.details_ or str(exc)
        except Exception as exc:
            if ctx.code_ is not None and ctx.code_ is not grpc.StatusCode.OK:
                return ctx.code_, ctx.details_
            log.exception("a gateway call's handler failed")
            return grpc.StatusCode.UNKNOWN, f"Unexpected {type(exc)}: {exc}"
        return ctx.code_ or grpc.StatusCode.OK, ctx.details_

    def _unary_arg(self, value: Any, info: MethodInfo, handler: grpc.RpcMethodHandler | None) -> Any:
        msg = parse_request(value, info.request_class)
        data = msg.SerializeToString()
        limit = self._server.max_receive_message_length
        if len(data) > limit:
            raise GatewayError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"grpc: received message larger than max ({len(data)} vs. {limit})",
            )
        return data

    @staticmethod
    async def _json_body(request: HttpRequest) -> Any:
        body = await request.body()
        try:
            text = body.decode()
        except UnicodeDecodeError:
            raise GatewayError(grpc.StatusCode.INVALID_ARGUMENT, "invalid UTF-8 in JSON body") from None
        first = first_value(text)
        return None if first is None else first[0]

    async def _stream_requests(self, request: HttpRequest, info: MethodInfo) -> AsyncIterator[Message]:
        """The request messages of a client-streaming call, parsed as the body arrives. The first
        is parsed before the call starts, so a bad one fails the request (UNKNOWN, as the gateway's
        stream setup reports it); a later bad one ends the requests, as the gateway stops sending."""
        source = _JsonValues(request)
        try:
            first = await source.next()
        except GatewayError as exc:
            raise GatewayError(grpc.StatusCode.UNKNOWN, exc.message) from None
        first_msg = None
        if first is not _JsonValues.EOF:
            try:
                first_msg = parse_request(first, info.request_class)
            except GatewayError as exc:
                raise GatewayError(grpc.StatusCode.UNKNOWN, exc.message) from None

        async def messages() -> AsyncIterator[Message]:
            if first_msg is None:
                return
            yield first_msg
            while True:
                try:
                    value = await source.next()
                    if value is _JsonValues.EOF:
                        return
                    yield parse_request(value, info.request_class)
                except (GatewayError, ConnectionResetError):
                    return

        return messages()


class _JsonValues:
    """Consecutive JSON values from a request body that may still be arriving."""

    EOF = object()

    def __init__(self, request: HttpRequest) -> None:
        self._chunks = request.chunks()
        self._decode = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._text = ""
        self._done = False

    async def next(self) -> Any:
        while True:
            stripped = self._text.lstrip()
            if stripped:
                try:
                    value, end = DECODER.raw_decode(stripped)
                    self._text = stripped[end:]
                    return value
                except json.JSONDecodeError as exc:
                    if self._done:
                        raise GatewayError(grpc.StatusCode.INVALID_ARGUMENT, go_json_error(exc)) from None
            elif self._done:
                return self.EOF
            try:
                chunk = await anext(self._chunks)
                self._text += self._decode.decode(chunk)
            except StopAsyncIteration:
                self._done = True
                self._text += self._decode.decode(b"", final=True)


async def _serialized(messages: AsyncIterator[Message]) -> AsyncIterator[bytes]:
    async for msg in messages:
        yield msg.SerializeToString()


def _metadata(request: HttpRequest) -> tuple[tuple[str, str | bytes], ...]:
    """grpc-gateway's default header matcher: Authorization, and Grpc-Metadata-* with the prefix cut."""
    out: list[tuple[str, str | bytes]] = []
    for name, value in request.headers.items():
        if name == "authorization":
            out.append((name, value))
        elif name.startswith("grpc-metadata-"):
            out.append((name[len("grpc-metadata-") :], value))
    return tuple(out)


def _peer(request: HttpRequest) -> str:
    return request.headers.get("x-forwarded-for", "")
