"""TLS for accepted connections, in memory: ssl.MemoryBIO between the TCP transport and a protocol.

Why not `loop.create_server(ssl=...)`: asyncio (and uvloop) drop a failed handshake silently — it
is logged only in debug mode — and an operator must see why a client or a peer was refused (an
untrusted certificate, plain HTTP on a TLS port). `loop.start_tls` on an accepted connection would
report failures but races the client's first bytes (the ClientHello can arrive before the
connection is paused). Driving the TLS state machine ourselves has neither problem, costs one extra
copy per record, and gives the protocol an ordinary transport: the HTTP/2 engine and the HTTP/1.1
hand-off both run unchanged on top.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import ssl
from collections.abc import Callable
from typing import Any

log = logging.getLogger("quorum.rpc")

HANDSHAKE_TIMEOUT = 10.0
_READ_CHUNK = 256 * 1024


class TLSServerProtocol(asyncio.Protocol):
    """Terminates TLS for one accepted connection and feeds plaintext to `inner_factory()`'s protocol."""

    def __init__(
        self,
        context: ssl.SSLContext,
        inner_factory: Callable[[], asyncio.Protocol],
        allowed_cn: str = "",
        allowed_hostname: str = "",
    ) -> None:
        self._context = context
        self._allowed_cn = allowed_cn
        self._allowed_hostname = allowed_hostname
        self._factory = inner_factory
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._tcp: asyncio.Transport | None = None
        self._app: TLSTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._closing = False

    # ---- from the TCP transport --------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._tcp = transport  # type: ignore[assignment]
        self._timer = asyncio.get_running_loop().call_later(HANDSHAKE_TIMEOUT, self._handshake_timeout)

    def data_received(self, data: bytes) -> None:
        self._incoming.write(data)
        if self._app is None and not self._handshake():
            return
        self._read_records()

    def eof_received(self) -> bool | None:
        self._incoming.write_eof()
        if self._app is not None:
            return self._app.protocol.eof_received()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._app is not None:
            self._app.protocol.connection_lost(exc)
        self._tcp = None

    def pause_writing(self) -> None:
        if self._app is not None:
            self._app.protocol.pause_writing()

    def resume_writing(self) -> None:
        if self._app is not None:
            self._app.protocol.resume_writing()

    # ---- TLS ---------------------------------------------------------------------------------------
    def _handshake(self) -> bool:
        try:
            self._ssl.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return False
        except (ssl.SSLError, OSError) as exc:
            self._flush()
            self._reject(getattr(exc, "reason", None) or str(exc))
            return False
        self._flush()
        if self._allowed_cn and _common_name(self._ssl.getpeercert()) != self._allowed_cn:
            self._reject(f"CommonName authentication failed (want {self._allowed_cn!r})")
            return False
        if self._allowed_hostname and not hostname_matches(self._ssl.getpeercert(), self._allowed_hostname):
            wanted = self._allowed_hostname
            self._reject(f"client certificate authentication failed (not valid for {wanted!r})")
            return False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        assert self._tcp is not None
        self._app = TLSTransport(self, self._tcp, self._ssl, self._factory())
        self._app.protocol.connection_made(self._app)
        return True

    def _handshake_timeout(self) -> None:
        self._timer = None
        if self._app is None:
            self._reject("TLS handshake timeout")

    def _reject(self, reason: str) -> None:
        tcp = self._tcp
        if tcp is None:
            return
        peer = tcp.get_extra_info("peername")
        remote = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else str(peer)
        log.warning("rejected connection", extra={"remote-addr": remote, "error": reason})
        tcp.abort()

    def _read_records(self) -> None:
        app = self._app
        assert app is not None
        while True:
            try:
                chunk = self._ssl.read(_READ_CHUNK)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:  # close_notify
                self._flush()
                app.close()
                return
            except ssl.SSLError as exc:
                log.warning("TLS connection failed", extra={"error": str(exc)})
                app.abort()
                return
            if not chunk:
                break
            app.protocol.data_received(chunk)
            if self._tcp is None:
                return
        self._flush()

    def send(self, data: bytes | bytearray | memoryview) -> None:
        if self._tcp is None or self._closing:
            return
        try:
            self._ssl.write(data)
        except ssl.SSLError as exc:
            log.warning("TLS write failed", extra={"error": str(exc)})
            self._tcp.abort()
            return
        self._flush()

    def shutdown(self) -> None:
        if self._tcp is None or self._closing:
            return
        self._closing = True
        try:
            self._ssl.unwrap()
        except ssl.SSLError:
            pass  # close_notify queued; the peer's reply is not awaited
        self._flush()
        self._tcp.close()

    def _flush(self) -> None:
        if self._outgoing.pending and self._tcp is not None:
            self._tcp.write(self._outgoing.read())


class TLSTransport(asyncio.Transport):
    """The plaintext side of a TLS connection, as the protocol above it sees it."""

    def __init__(
        self,
        owner: TLSServerProtocol,
        tcp: asyncio.Transport,
        sslobj: ssl.SSLObject,
        protocol: asyncio.Protocol,
    ) -> None:
        super().__init__()
        self._owner = owner
        self._tcp = tcp
        self._ssl = sslobj
        self.protocol = protocol

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "ssl_object":
            return self._ssl
        if name == "peercert":
            return self._ssl.getpeercert()
        if name == "cipher":
            return self._ssl.cipher()
        if name == "sslcontext":
            return self._ssl.context
        return self._tcp.get_extra_info(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._owner.send(data)

    def writelines(self, list_of_data: Any) -> None:
        self._owner.send(b"".join(list_of_data))

    def can_write_eof(self) -> bool:
        return False

    def close(self) -> None:
        self._owner.shutdown()

    def abort(self) -> None:
        self._tcp.abort()

    def is_closing(self) -> bool:
        return self._tcp.is_closing()

    def pause_reading(self) -> None:
        self._tcp.pause_reading()

    def resume_reading(self) -> None:
        self._tcp.resume_reading()

    def is_reading(self) -> bool:
        return self._tcp.is_reading()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol  # type: ignore[assignment]

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self.protocol

    def get_write_buffer_size(self) -> int:
        return self._tcp.get_write_buffer_size()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._tcp.set_write_buffer_limits(high, low)


def hostname_matches(peercert: Any, hostname: str) -> bool:
    """Whether a verified certificate is valid for ``hostname`` as Go's x509 VerifyHostname decides
    (etcd's --*-cert-allowed-hostname): an IP address against the IP SANs, a name against the DNS
    SANs (a leading "*." matching one label); the CommonName is not consulted."""
    sans = (peercert or {}).get("subjectAltName", ())
    try:
        ip = ipaddress.ip_address(hostname.strip("[]"))
    except ValueError:
        ip = None
    if ip is not None:
        for kind, value in sans:
            if kind == "IP Address":
                with contextlib.suppress(ValueError):
                    if ipaddress.ip_address(value.strip()) == ip:
                        return True
        return False
    host = hostname.lower().rstrip(".")
    for kind, value in sans:
        if kind != "DNS":
            continue
        pattern = value.lower().rstrip(".")
        if pattern == host:
            return True
        if pattern.startswith("*.") and "." in host and host.split(".", 1)[1] == pattern[2:]:
            return True
    return False


def _common_name(peercert: Any) -> str:
    for rdn in (peercert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return ""
