"""`quorum grpc-proxy start` flags: etcd 3.4's grpc-proxy flags and defaults, plus Quorum's additions.

etcd's flags (same names and defaults): ``--endpoints`` (127.0.0.1:2379), ``--listen-addr``
(127.0.0.1:23790), ``--advertise-client-url`` (127.0.0.1:23790), ``--resolver-prefix``,
``--resolver-ttl``, ``--namespace``, ``--metrics-addr``, ``--max-recv-bytes``, ``--max-send-bytes``,
``--max-concurrent-streams``, the cluster-side TLS files (``--cert``, ``--key``, ``--cacert``) and the
client-side ones (``--cert-file``, ``--key-file``, ``--trusted-ca-file``). Flags etcd has for features
Quorum's proxy does not have yet (``--auto-tls``, ``--insecure-skip-tls-verify``, discovery, leasing,
pprof) are refused with "not supported yet" when set, never silently ignored.

Additions: ``--endpoints-auto-sync-interval`` (0 = off: follow the cluster's member list),
``--cache-size`` (entries of the range cache, 0 = no cache), ``--cache-ttl``, ``--log-level``,
``--log-outputs``.

The configuration is parsed once here into a frozen :class:`ProxyConfig`; nothing else reads argv.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from cluster.server.urls import parse_bool, parse_duration
from gateway.config import split_host_port

DEFAULT_LISTEN_ADDR = "127.0.0.1:23790"
DEFAULT_ENDPOINTS = ("127.0.0.1:2379",)
DEFAULT_CACHE_SIZE = 2048
"""etcd's proxy cache holds cache.DefaultMaxEntries (2048) ranges."""
_LOG_LEVELS = ("debug", "info", "warn", "error", "panic", "fatal")
_UNSUPPORTED = (
    "auto_tls",
    "insecure_skip_tls_verify",
    "discovery_srv",
    "discovery_srv_name",
    "insecure_discovery",
    "experimental_leasing_prefix",
    "experimental_serializable_ordering",
    "enable_pprof",
    "client_crl_file",
    "listen_cipher_suites",
)


class ProxyConfigError(ValueError):
    """A flag value the proxy cannot use; the message is printed and the process exits 1."""


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    endpoints: tuple[str, ...] = DEFAULT_ENDPOINTS
    listen_host: str = "127.0.0.1"
    listen_port: int = 23790
    advertise_client_url: str = DEFAULT_LISTEN_ADDR
    resolver_prefix: str = ""
    resolver_ttl: int = 0
    namespace: bytes = b""
    metrics_host: str = ""
    metrics_port: int = 0
    endpoints_auto_sync_interval: float = 0.0
    cache_size: int = DEFAULT_CACHE_SIZE
    cache_ttl: float = 0.0
    max_recv_bytes: int = 2**31 - 1
    max_send_bytes: int = 1536 * 1024
    max_concurrent_streams: int = 2**32 - 1
    cert: str = ""
    key: str = ""
    cacert: str = ""
    cert_file: str = ""
    key_file: str = ""
    trusted_ca_file: str = ""
    log_level: str = "info"
    log_outputs: tuple[str, ...] = ("default",)

    @property
    def listen_addr(self) -> str:
        host = f"[{self.listen_host}]" if ":" in self.listen_host else self.listen_host
        return f"{host}:{self.listen_port}"

    @property
    def client_tls(self) -> bool:
        return bool(self.cert_file or self.key_file)


def _string_slice(values: Sequence[str]) -> list[str]:
    """pflag's StringSlice: every occurrence is split on commas; repeated flags accumulate."""
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


def _duration(text: str) -> float:
    try:
        value = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: {exc}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: must not be negative")
    return value


def _boolean(text: str) -> bool:
    try:
        return parse_bool(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"invalid boolean {text!r}: {exc}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="quorum grpc-proxy start", description="start the grpc proxy")
    add = parser.add_argument
    add("--endpoints", action="append", default=[], help="comma separated etcd cluster endpoints")
    add("--listen-addr", default=DEFAULT_LISTEN_ADDR, help="listen address (default 127.0.0.1:23790)")
    add(
        "--advertise-client-url",
        default=DEFAULT_LISTEN_ADDR,
        help="advertise address to register (must be reachable by client)",
    )
    add("--resolver-prefix", default="", help="prefix to use for registering proxy")
    add("--resolver-ttl", type=int, default=0, help="TTL, in seconds, when registering proxy endpoints")
    add("--namespace", default="", help="string to prefix to all keys for namespacing requests")
    add("--metrics-addr", default="", help="also serve /metrics on this URL or host:port")
    add(
        "--endpoints-auto-sync-interval",
        type=_duration,
        default=0.0,
        help="how often to refresh the endpoints from the cluster's member list (0 = never)",
    )
    add("--cache-size", type=int, default=DEFAULT_CACHE_SIZE, help="ranges kept by the range cache (0 = off)")
    add(
        "--cache-ttl",
        type=_duration,
        default=0.0,
        help="drop cached ranges this long after they were fetched (0 = only when invalidated or evicted)",
    )
    add("--max-recv-bytes", type=int, default=2**31 - 1, help="message receive limit in bytes")
    add("--max-send-bytes", type=int, default=1536 * 1024, help="message send limit in bytes")
    add("--max-concurrent-streams", type=int, default=2**32 - 1, help="streams per client connection")
    add("--cert", default="", help="TLS certificate for connections to etcd servers")
    add("--key", default="", help="TLS key for connections to etcd servers")
    add("--cacert", default="", help="CA bundle verifying TLS-enabled etcd servers")
    add("--cert-file", default="", help="TLS certificate clients see on the proxy")
    add("--key-file", default="", help="TLS key of the proxy's certificate")
    add("--trusted-ca-file", default="", help="CA verifying client certificates of the proxy")
    add("--data-dir", default="default.proxy", help="data directory (unused: the proxy is stateless)")
    add("--debug", type=_boolean, nargs="?", const=True, default=False, help="debug-level logging")
    add("--log-level", default="info", choices=_LOG_LEVELS)
    add("--log-outputs", action="append", default=[], help="stderr (default), stdout, or file paths")
    for name in _UNSUPPORTED:
        add("--" + name.replace("_", "-"), nargs="?", const="true", default="", help=argparse.SUPPRESS)
    return parser


def parse_proxy_args(argv: Sequence[str]) -> ProxyConfig:
    """``argv`` after ``grpc-proxy start``; raises :class:`ProxyConfigError` for unusable values
    (argparse itself exits 2 on unknown flags, like cobra)."""
    ns = build_parser().parse_args(list(argv))
    for name in _UNSUPPORTED:
        value = getattr(ns, name)
        if value and value != "false":
            raise ProxyConfigError(f"--{name.replace('_', '-')} is not supported yet by quorum grpc-proxy")
    try:
        listen_host, listen_port = split_host_port(ns.listen_addr)
        metrics = urlsplit(ns.metrics_addr).netloc if "://" in ns.metrics_addr else ns.metrics_addr
        metrics_host, metrics_port = split_host_port(metrics) if metrics else ("", 0)
    except ValueError as exc:
        raise ProxyConfigError(str(exc)) from None
    if ns.resolver_prefix and ns.resolver_ttl < 1:  # etcd's checkArgs
        raise ProxyConfigError(f"invalid resolver-ttl {ns.resolver_ttl}")
    if not ns.resolver_prefix and ns.resolver_ttl > 0:
        raise ProxyConfigError(f'invalid resolver-prefix "{ns.resolver_prefix}"')
    if ns.resolver_prefix and not ns.advertise_client_url:
        raise ProxyConfigError('invalid advertise-client-url ""')
    if bool(ns.cert_file) != bool(ns.key_file):
        raise ProxyConfigError("both --cert-file and --key-file are needed for TLS to clients")
    if bool(ns.cert) != bool(ns.key):
        raise ProxyConfigError("both --cert and --key are needed for a TLS client certificate")
    if ns.cache_size < 0:
        raise ProxyConfigError("--cache-size must not be negative")
    return ProxyConfig(
        endpoints=tuple(_string_slice(ns.endpoints)) or DEFAULT_ENDPOINTS,
        listen_host=listen_host,
        listen_port=listen_port,
        advertise_client_url=ns.advertise_client_url,
        resolver_prefix=ns.resolver_prefix,
        resolver_ttl=ns.resolver_ttl,
        namespace=ns.namespace.encode(),
        metrics_host=metrics_host,
        metrics_port=metrics_port,
        endpoints_auto_sync_interval=ns.endpoints_auto_sync_interval,
        cache_size=ns.cache_size,
        cache_ttl=ns.cache_ttl,
        max_recv_bytes=ns.max_recv_bytes,
        max_send_bytes=ns.max_send_bytes,
        max_concurrent_streams=ns.max_concurrent_streams,
        cert=ns.cert,
        key=ns.key,
        cacert=ns.cacert,
        cert_file=ns.cert_file,
        key_file=ns.key_file,
        trusted_ca_file=ns.trusted_ca_file,
        log_level="debug" if ns.debug else ns.log_level,
        log_outputs=tuple(_string_slice(ns.log_outputs)) or ("default",),
    )
