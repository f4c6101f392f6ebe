"""Registering servicers so that malformed request bodies fail as they do on etcd.

grpc-go answers a body that is not a valid protobuf message with INTERNAL "grpc: error unmarshalling
request: ...". grpc.aio, given the generated deserializer, would answer UNKNOWN with a Python
exception text. So unary methods are registered with raw bytes in and the request is parsed in the
handler, where a decode failure can be answered with etcd's status. Streaming methods keep the
generated deserializers (a bad frame on a stream ends it either way).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from cluster.api import errors
from cluster.api.gen.etcdserverpb import rpc_pb2
from cluster.api.grpc_names import METHODS, MethodInfo

UNMARSHAL_PREFIX = "grpc: error unmarshalling request: "


LearnerCheck = Callable[[], bool]
"""Is this member a learner right now? Learners serve only Status and serializable Range (etcd)."""


def supported_for_learner(request: Any) -> bool:
    """etcd's isRPCSupportedForLearner."""
    if isinstance(request, rpc_pb2.StatusRequest):
        return True
    return isinstance(request, rpc_pb2.RangeRequest) and request.serializable


def _unary(
    info: MethodInfo, fn: Callable[[Any, Any], Any], learner: LearnerCheck | None
) -> grpc.RpcMethodHandler:
    parse = info.request_class.FromString
    is_async = inspect.iscoroutinefunction(fn)

    async def handle(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
        try:
            request = parse(raw)
        except DecodeError as exc:
            await context.abort(grpc.StatusCode.INTERNAL, UNMARSHAL_PREFIX + (str(exc) or "bad message"))
        if learner is not None and learner() and not supported_for_learner(request):
            await errors.NOT_SUPPORTED_FOR_LEARNER.abort(context)
        if is_async:
            return await fn(request, context)
        try:  # a generated base-class method: the method is not built yet
            return fn(request, context)
        except NotImplementedError:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not implemented!")

    return grpc.unary_unary_rpc_method_handler(
        handle, request_deserializer=None, response_serializer=_serializer(info)
    )


def _serializer(info: MethodInfo) -> Callable[[Any], bytes]:
    """Responses may already be bytes (built without a message object on hot paths)."""
    to_bytes = info.response_class.SerializeToString

    def serialize(response: Any) -> bytes:
        return response if isinstance(response, bytes) else to_bytes(response)

    return serialize


def learner_gated(fn: Callable[..., Any], learner: LearnerCheck | None) -> Callable[..., Any]:
    """A streaming handler that learners refuse (etcd's stream interceptor refuses every stream)."""
    if learner is None:
        return fn
    if inspect.isasyncgenfunction(fn):

        async def stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if learner():
                await errors.NOT_SUPPORTED_FOR_LEARNER.abort(context)
            async for response in fn(request, context):
                yield response

        return stream

    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if learner():
            await errors.NOT_SUPPORTED_FOR_LEARNER.abort(context)
        return await fn(request, context)

    return call


def _streaming(
    info: MethodInfo, fn: Callable[..., Any], learner: LearnerCheck | None
) -> grpc.RpcMethodHandler:
    fn = learner_gated(fn, learner)
    parse = info.request_class.FromString
    if info.client_streaming and info.server_streaming:
        factory = grpc.stream_stream_rpc_method_handler
    elif info.client_streaming:
        factory = grpc.stream_unary_rpc_method_handler
    else:
        factory = grpc.unary_stream_rpc_method_handler
    return factory(fn, request_deserializer=parse, response_serializer=_serializer(info))


def add_service(
    server: grpc.aio.Server,
    service: str,
    servicer: object,
    *,
    skip: Iterable[str] = (),
    learner: LearnerCheck | None = None,
) -> None:
    """Register every method of `service` (e.g. "etcdserverpb.KV") that `servicer` provides.

    Methods the servicer lacks are left to the generated base class, which answers UNIMPLEMENTED.
    """
    skipped = set(skip)
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for info in METHODS.values():
        if info.service != service or info.method in skipped:
            continue
        fn = getattr(servicer, info.method)
        if info.client_streaming or info.server_streaming:
            handlers[info.method] = _streaming(info, fn, learner)
        else:
            handlers[info.method] = _unary(info, fn, learner)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
