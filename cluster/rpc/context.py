"""The servicer context handed to handlers: the subset of grpc.aio.ServicerContext services use."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import grpc

if TYPE_CHECKING:
    from cluster.rpc.connection import Stream

Metadata = tuple[tuple[str, str | bytes], ...]


class Abort(Exception):
    """Ends a call with a status (grpc.aio raises AbortError the same way)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class ServicerContext:
    __slots__ = ("_callbacks", "_deadline", "_metadata", "_peer", "_stream", "code_", "details_")

    def __init__(self, stream: Stream, metadata: Metadata, peer: str, deadline: float | None) -> None:
        self._stream = stream
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
