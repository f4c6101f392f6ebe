"""The servicer context handed to handlers: the subset of grpc.aio.ServicerContext services use."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol, cast

import grpc

Metadata = tuple[tuple[str, str | bytes], ...]


class Stream(Protocol):
    """What a context needs of its call: an HTTP/2 stream (connection.py) or an HTTP/1.1 gateway call."""

    cancelled: bool
    finished: bool

    async def write(self, message: Any) -> None: ...

    async def read(self) -> Any: ...


class Abort(Exception):
    """Ends a call with a status (grpc.aio raises AbortError the same way)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class ServicerContext:
    __slots__ = ("_auth", "_callbacks", "_deadline", "_metadata", "_peer", "_stream", "code_", "details_")

    def __init__(
        self,
        stream: Stream,
        metadata: Metadata,
        peer: str,
        deadline: float | None,
        auth: Mapping[str, list[bytes]] | None = None,
    ) -> None:
        self._stream = stream
        self._auth = auth or {}
        self._metadata = metadata
        self._peer = peer
        self._deadline = deadline
        self.code_: grpc.StatusCode | None = None
        self.details_ = ""
        self._callbacks: list[Callable[[Any], None]] = []

    def invocation_metadata(self) -> Metadata:
        return self._metadata

    def peer(self) -> str:
        return self._peer

    def auth_context(self) -> Mapping[str, list[bytes]]:
        """grpc's auth context: with TLS, `x509_common_name` holds the verified client CN."""
        return self._auth

    @property
    def deadline(self) -> float | None:
        """The call's deadline on the loop's clock (None without grpc-timeout)."""
        return self._deadline

    def time_remaining(self) -> float | None:
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - asyncio.get_running_loop().time())

    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: Sequence[Any] = ()
    ) -> None:
        raise Abort(code, details)

    def set_code(self, code: grpc.StatusCode) -> None:
        self.code_ = code

    def set_details(self, details: str) -> None:
        self.details_ = details

    def code(self) -> grpc.StatusCode | None:
        return self.code_

    def details(self) -> str:
        return self.details_

    def set_trailing_metadata(self, trailing_metadata: Sequence[Any]) -> None:
        """Accepted and not sent: no etcd API method sets trailing metadata."""

    async def send_initial_metadata(self, initial_metadata: Sequence[Any]) -> None:
        """Accepted; response headers go out with the first message anyway."""

    async def write(self, message: Any) -> None:
        await self._stream.write(message)

    async def read(self) -> Any:
        return await self._stream.read()

    def cancelled(self) -> bool:
        return self._stream.cancelled

    def done(self) -> bool:
        return self._stream.finished

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        self._callbacks.append(callback)

    def run_done_callbacks(self) -> None:
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback(self)


AnswerNow = Callable[[bytes, "ServicerContext"], "bytes | None"]
"""A unary bytes-in, bytes-out handler's synchronous fast path: the response now, or None to run the
handler as usual."""


def answer_now_of(handler: grpc.RpcMethodHandler) -> AnswerNow | None:
    """The fast path of a unary handler whose behaviour has an ``answer_now`` attribute (and no
    (de)serializers): the connection calls it as soon as the request is complete, without starting a
    task, so an answer that needs no I/O (the gRPC proxy's cache hits) costs no extra loop pass."""
    if handler.unary_unary is None or handler.request_deserializer or handler.response_serializer:
        return None
    return cast("AnswerNow | None", getattr(handler.unary_unary, "answer_now", None))


def behaviour_of(handler: grpc.RpcMethodHandler) -> Callable[..., Any]:
    """The handler's function, whatever its streaming shape."""
    return cast(
        Callable[..., Any],
        handler.unary_unary or handler.unary_stream or handler.stream_unary or handler.stream_stream,
    )


async def send_responses(result: Any, write: Callable[[Any], Awaitable[None]]) -> None:
    """Drive a response-streaming handler's result: an async generator, a coroutine that writes
    through its context, or a synchronous generator."""
    if inspect.isasyncgen(result):
        async for response in result:
            await write(response)
    elif inspect.isawaitable(result):
        await result
    else:
        for response in result:
            await write(response)
