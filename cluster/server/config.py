"""The node's configuration: every etcd 3.4 server flag, parsed once at the edge into a frozen dataclass.

Sources and precedence follow etcd 3.4 exactly:

* ``--config-file PATH`` (or ``ETCD_CONFIG_FILE`` / ``QUORUM_CONFIG_FILE`` when the flag is absent): the
  YAML file is the only source; every other flag and environment variable is ignored, as etcd does.
  Keys are etcd's (``name``, ``listen-client-urls`` as a comma-separated string, durations as integer
  nanoseconds — a Go duration string such as ``5s`` is also accepted here — and TLS settings under
  ``client-transport-security`` / ``peer-transport-security``). Unknown keys are ignored, like etcd.
* otherwise command-line flags (Go ``flag`` syntax: ``-name v``, ``--name=v``, bool flags take no value),
  then ``ETCD_<FLAG>`` environment variables for flags not given on the command line. ``QUORUM_<FLAG>``
  is accepted as an alias and wins over ``ETCD_<FLAG>``. A variable for a flag that is also given on
  the command line is fatal (etcd's "conflicting environment variable ... is shadowed" error).

Errors raise :class:`ConfigError`. ``exit_code`` is etcd's: 2 for flag syntax errors (the usage text
follows the message), 1 for everything found while verifying values. ``--help`` and ``--version``
raise :class:`InfoRequested` carrying the text to print on stdout and exit 0 with.

Deliberate differences from etcd, for the better or because of the platform:

* ``--data-dir`` defaults to ``${name}.quorum`` (etcd: ``${name}.etcd``).
* When ``--initial-cluster`` is not given it is ``<name>=<each initial-advertise-peer-url>`` even for the
  name ``default`` (etcd keeps ``default=http://localhost:2380`` in that one case, then fails to start).
* Default URLs stay etcd's ``http://localhost:2379`` / ``:2380`` so member ids equal etcd's; a listen
  URL whose host is ``localhost`` binds 127.0.0.1 (see :meth:`URL.bind_host`), which is the address the
  README and etcdctl's default endpoint use.
* ``--logger capnslog`` is accepted and logs the same JSON lines as ``zap``.
* The checks etcd makes only when bootstrapping (local name present in ``--initial-cluster``,
  advertised peer URLs equal to the member's ``--initial-cluster`` URLs, duplicate URLs) run here, so a
  bad unit file fails before anything touches the data dir. Hostnames are compared as written, not
  resolved.

Honoured by the node now (the others are parsed, validated and kept, but have no effect yet):
name, data-dir, wal-dir, listen-peer-urls, listen-client-urls, listen-metrics-urls,
initial-advertise-peer-urls, advertise-client-urls, initial-cluster, initial-cluster-token,
initial-cluster-state, heartbeat-interval, election-timeout, initial-election-tick-advance,
snapshot-count, max-snapshots, max-wals, quota-backend-bytes, max-request-bytes, max-txn-ops,
grpc-keepalive-*, max-concurrent-streams, strict-reconfig-check, pre-vote, auto-compaction-mode,
auto-compaction-retention, auth-token (simple | jwt,pub-key=,priv-key=,sign-method=,ttl=), bcrypt-cost,
auth-token-ttl, metrics, logger,
log-level, log-outputs, debug, experimental-compaction-batch-limit,
experimental-watch-progress-notify-interval, experimental-enable-lease-checkpoint(-persist),
experimental-warning-apply-duration, unsafe-no-fsync, force-new-cluster, backend-batch-interval (how
long an inline apply's LMDB transaction stays open for the next ones; 10 ms when unset), and Quorum's own
experimental-grpc-engine (quorum|grpcio: which gRPC server engine serves the client port).
TLS flags (cert-file, key-file, client-cert-auth, trusted-ca-file, auto-tls, client-crl-file,
peer-*, peer-cert-allowed-cn, client- and peer-cert-allowed-hostname, cipher-suites) are implemented
(cluster/tls.py, cluster/rpc/tls.py). Accepted but not implemented: discovery, discovery-srv and friends,
the v2 API and v2 proxy (enable-v2, proxy*, experimental-enable-v2v3), cors, host-whitelist, enable-pprof,
enable-grpc-gateway (the JSON gateway is always on), backend-batch-limit,
experimental-backend-bbolt-freelist-type, experimental-initial-corrupt-check,
experimental-corrupt-check-time, log-package-levels, and etcd's long-ignored flags (-v, -vv, ...).
"""

from __future__ import annotations

import dataclasses
import os
import platform
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import yaml

from cluster.server import urls as u
from cluster.server.urls import URL

ETCD_API_VERSION = "3.4.23"
PROGRAM = "quorum"
DEFAULT_QUOTA_BACKEND_BYTES = 2 * 1024**3
MAX_QUOTA_BACKEND_BYTES = 8 * 1024**3
MAX_ELECTION_MS = 50000
ENV_PREFIXES = ("ETCD", "QUORUM")


def quorum_version() -> str:
    try:
        return metadata.version("quorumkv")
    except metadata.PackageNotFoundError:
        return "0.1.0"


class ConfigError(Exception):
    """A configuration the node must refuse. ``str()`` is exactly what to print on stderr."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code

    def __str__(self) -> str:
        if self.exit_code == 2:
            return f"{self.message}\n{usage_text()}"
        return f"error verifying flags, {self.message}. See '{PROGRAM} --help'."


class InfoRequested(Exception):
    """``--help`` or ``--version``: print ``text`` on stdout and exit with status 0."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


def _urls(text: str) -> tuple[URL, ...]:
    return u.parse_urls(text)


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Every etcd 3.4 server flag, typed. Field = flag name with ``-`` → ``_``; durations are seconds."""

    # member
    name: str = "default"
    data_dir: str = ""
    wal_dir: str = ""
    snapshot_count: int = 100000
    heartbeat_interval: int = 100
    election_timeout: int = 1000
    initial_election_tick_advance: bool = True
    listen_peer_urls: tuple[URL, ...] = _urls("http://localhost:2380")
    listen_client_urls: tuple[URL, ...] = _urls("http://localhost:2379")
    listen_metrics_urls: tuple[URL, ...] = ()
    max_snapshots: int = 5
    max_wals: int = 5
    quota_backend_bytes: int = 0
    backend_batch_interval: float = 0.0
    backend_batch_limit: int = 0
    max_txn_ops: int = 128
    max_request_bytes: int = 1572864
    max_concurrent_streams: int = 4294967295
    grpc_keepalive_min_time: float = 5.0
    grpc_keepalive_interval: float = 7200.0
    grpc_keepalive_timeout: float = 20.0
    # clustering
    initial_advertise_peer_urls: tuple[URL, ...] = _urls("http://localhost:2380")
    advertise_client_urls: tuple[URL, ...] = _urls("http://localhost:2379")
    initial_cluster: str = ""
    initial_cluster_state: str = "new"
    initial_cluster_token: str = "etcd-cluster"
    discovery: str = ""
    discovery_fallback: str = "proxy"
    discovery_proxy: str = ""
    discovery_srv: str = ""
    discovery_srv_name: str = ""
    strict_reconfig_check: bool = True
    pre_vote: bool = False
    auto_compaction_retention: str = "0"
    auto_compaction_mode: str = "periodic"
    enable_v2: bool = False
    # v2 proxy
    proxy: str = "off"
    proxy_failure_wait: int = 5000
    proxy_refresh_interval: int = 30000
    proxy_dial_timeout: int = 1000
    proxy_write_timeout: int = 5000
    proxy_read_timeout: int = 0
    # security
    cert_file: str = ""
    key_file: str = ""
    client_cert_auth: bool = False
    client_crl_file: str = ""
    client_cert_allowed_hostname: str = ""
    trusted_ca_file: str = ""
    auto_tls: bool = False
    peer_cert_file: str = ""
    peer_key_file: str = ""
    peer_client_cert_auth: bool = False
    peer_trusted_ca_file: str = ""
    peer_cert_allowed_cn: str = ""
    peer_cert_allowed_hostname: str = ""
    peer_auto_tls: bool = False
    peer_crl_file: str = ""
    cipher_suites: tuple[str, ...] = ()
    cors: tuple[str, ...] = ("*",)
    host_whitelist: tuple[str, ...] = ("*",)
    # auth
    auth_token: str = "simple"
    bcrypt_cost: int = 10
    auth_token_ttl: int = 300
    # profiling and monitoring
    enable_pprof: bool = False
    metrics: str = "basic"
    enable_grpc_gateway: bool = True
    # logging
    logger: str = "zap"
    log_outputs: tuple[str, ...] = ("default",)
    log_output: tuple[str, ...] = ("default",)
    log_level: str = "info"
    debug: bool = False
    log_package_levels: str = ""
    # experimental and unsafe
    experimental_initial_corrupt_check: bool = False
    experimental_corrupt_check_time: float = 0.0
    experimental_enable_v2v3: str = ""
    experimental_backend_bbolt_freelist_type: str = ""
    experimental_enable_lease_checkpoint: bool = False
    experimental_enable_lease_checkpoint_persist: bool = False
    experimental_compaction_batch_limit: int = 0
    experimental_peer_skip_client_san_verification: bool = False
    experimental_watch_progress_notify_interval: float = 0.0
    experimental_warning_apply_duration: float = 0.1
    experimental_grpc_engine: str = "quorum"
    """Quorum's own: "quorum" (cluster.rpc, the default) or "grpcio" (grpc.aio) serves client gRPC."""
    unsafe_no_fsync: bool = False
    force_new_cluster: bool = False
    # where it came from, and what to tell the operator once logging is up
    config_file: str = ""
    warnings: tuple[str, ...] = field(default=(), compare=False)
    notices: tuple[str, ...] = field(default=(), compare=False)

    # ---- derived values -------------------------------------------------------------------------
    @property
    def election_ticks(self) -> int:
        return self.election_timeout // self.heartbeat_interval

    @property
    def heartbeat_ticks(self) -> int:
        return 1

    @property
    def tick_seconds(self) -> float:
        return self.heartbeat_interval / 1000.0

    @property
    def member_dir(self) -> str:
        return os.path.join(self.data_dir, "member")

    @property
    def wal_path(self) -> str:
        """The WAL directory: ``--wal-dir`` when given, else ``<data-dir>/member/wal``."""
        return self.wal_dir or os.path.join(self.member_dir, "wal")

    @property
    def snap_dir(self) -> str:
        return os.path.join(self.member_dir, "snap")

    @property
    def backend_path(self) -> str:
        return os.path.join(self.snap_dir, "db")

    @property
    def is_new_cluster(self) -> bool:
        return self.initial_cluster_state == "new"

    @property
    def initial_peers(self) -> dict[str, tuple[URL, ...]]:
        """``--initial-cluster`` as ``{name: sorted peer URLs}``."""
        return u.parse_initial_cluster(self.initial_cluster)

    @property
    def quota_bytes(self) -> int:
        """The effective backend quota: 0 means etcd's 2 GiB default; negative disables the quota."""
        return DEFAULT_QUOTA_BACKEND_BYTES if self.quota_backend_bytes == 0 else self.quota_backend_bytes

    @property
    def effective_log_level(self) -> str:
        return "debug" if self.debug else self.log_level

    @property
    def compaction_batch_limit(self) -> int:
        return self.experimental_compaction_batch_limit or 1000

    @property
    def watch_progress_notify_interval(self) -> float:
        return self.experimental_watch_progress_notify_interval or 600.0

    @property
    def auto_compaction_retention_value(self) -> float:
        """Seconds (periodic mode; a bare number means hours) or a revision count (revision mode)."""
        return _compaction_retention(self.auto_compaction_mode, self.auto_compaction_retention)


# ---- the flag table ---------------------------------------------------------------------------------

_CHOICES = {
    "experimental-grpc-engine": ("quorum", "grpcio"),
    "initial-cluster-state": ("new", "existing"),
    "discovery-fallback": ("proxy", "exit"),
    "proxy": ("off", "readonly", "on"),
}
_INT_BITS = {
    "snapshot-count": (64, False),
    "quota-backend-bytes": (64, True),
    "backend-batch-limit": (64, True),
    "max-concurrent-streams": (32, False),
    "experimental-compaction-batch-limit": (64, True),
}
# etcd's flags from long-gone versions: accepted with a warning and ignored.
IGNORED_FLAGS = (
    "cluster-active-size", "cluster-remove-delay", "cluster-sync-interval", "config", "force",
    "max-result-buffer", "max-retry-attempts", "peer-heartbeat-interval", "peer-election-timeout",
    "retry-interval", "snapshot", "v", "vv", "test.coverprofile", "test.outputdir",
)  # fmt: skip
_NOT_IN_FILE = frozenset({"config-file", "cert-file", "key-file", "client-cert-auth", "trusted-ca-file",
                          "auto-tls", "peer-cert-file", "peer-key-file", "peer-client-cert-auth",
                          "peer-trusted-ca-file", "peer-auto-tls", "client-crl-file", "peer-crl-file",
                          "client-cert-allowed-hostname", "peer-cert-allowed-cn",
                          "peer-cert-allowed-hostname", "experimental-peer-skip-client-san-verification"})
_NOT_FLAGS = frozenset({"warnings", "notices"})
_FIELDS = {f.name: f for f in dataclasses.fields(ServerConfig) if f.name not in _NOT_FLAGS}
FLAG_NAMES = tuple(name.replace("_", "-") for name in _FIELDS)


def _kind(flag: str) -> str:
    """How a flag's text is parsed: derived from the field's type so the dataclass is the one table."""
    if flag in _CHOICES:
        return "choice"
    if flag == "cors":
        return "cors"
    annotation = str(_FIELDS[flag.replace("-", "_")].type)
    return {
        "str": "str", "bool": "bool", "int": "int", "float": "duration",
        "tuple[URL, ...]": "urls", "tuple[str, ...]": "strings",
    }[annotation]  # fmt: skip


def _convert(flag: str, text: str) -> Any:
    """Parse one flag's text; ``ValueError`` carries etcd's reason (``parse error``, ...)."""
    kind = _kind(flag)
    if kind == "str":
        return text
    if kind == "bool":
        return u.parse_bool(text)
    if kind == "int":
        bits, signed = _INT_BITS.get(flag, (64, False))
        if flag != "max-concurrent-streams":
            return u.parse_int(text, bits, signed)
        try:
            return u.parse_int(text, bits, signed)
        except ValueError as exc:
            reason = "invalid syntax" if str(exc) == "parse error" else str(exc)
            raise ValueError(f'strconv.ParseUint: parsing "{text}": {reason}') from None
    if kind == "duration":
        try:
            return u.parse_duration(text)
        except ValueError:
            raise ValueError("parse error") from None
    if kind == "choice":
        if text not in _CHOICES[flag]:
            raise ValueError("invalid value")
        return text
    if kind == "urls":
        return () if text == "" else u.parse_urls(text)
    if kind == "cors":
        return ("*",) if text == "*" else tuple(str(x) for x in u.parse_urls(text))
    if flag == "cipher-suites":
        return tuple(s for s in text.split(",") if s)
    return tuple(sorted({s for s in text.split(",") if s}))


# ---- command line -----------------------------------------------------------------------------------


def _scan_argv(argv: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
    """Go ``flag`` syntax → (flag → parsed value, warnings). Raises exit-2 errors."""
    values: dict[str, Any] = {}
    warnings: list[str] = []
    version = False
    args = list(argv)
    while args:
        arg = args[0]
        if len(arg) < 2 or arg[0] != "-":
            break
        args.pop(0)
        if arg == "--":
            break
        name = arg[2:] if arg.startswith("--") else arg[1:]
        if not name or name[0] in "-=":
            raise ConfigError(f"bad flag syntax: {arg}", 2)
        name, has_value, value = name.partition("=")
        if name in ("help", "h"):
            raise InfoRequested(help_text())
        if name in IGNORED_FLAGS:
            warnings.append(f'flag "-{name}" is no longer supported - ignoring.')
            continue
        if name == "version":
            if has_value:
                try:
                    on = u.parse_bool(value)
                except ValueError:
                    message = f'invalid boolean value "{value}" for -{name}: parse error'
                    raise ConfigError(message, 2) from None
            else:
                on = True
            version = on
            continue
        if name not in FLAG_NAMES:
            raise ConfigError(f"flag provided but not defined: -{name}", 2)
        if _kind(name) == "bool":
            text = value if has_value else "true"
            try:
                values[name] = u.parse_bool(text)
            except ValueError:
                raise ConfigError(f'invalid boolean value "{text}" for -{name}: parse error', 2) from None
            continue
        if not has_value:
            if not args:
                raise ConfigError(f"flag needs an argument: -{name}", 2)
            value = args.pop(0)
        try:
            values[name] = _convert(name, value)
        except ValueError as exc:
            raise ConfigError(f'invalid value "{value}" for flag -{name}: {exc}', 2) from None
    if version:
        raise InfoRequested(version_text())
    if args:
        raise ConfigError(f"'{args[0]}' is not a valid flag")
    return values, warnings


def _env_key(prefix: str, flag: str) -> str:
    return f"{prefix}_{flag.upper().replace('-', '_')}"


def _from_environ(
    environ: Mapping[str, str], on_command_line: Mapping[str, Any]
) -> tuple[dict[str, Any], list[str], list[str]]:
    """Fill flags not given on the command line from ``ETCD_*`` / ``QUORUM_*`` (the alias wins)."""
    values: dict[str, Any] = {}
    warnings: list[str] = []
    notices: list[str] = []
    used: set[str] = set()
    for flag in FLAG_NAMES:
        if flag == "config-file":
            continue
        for prefix in ENV_PREFIXES:
            key = _env_key(prefix, flag)
            if key not in environ:
                continue
            if flag in on_command_line:
                raise ConfigError(
                    f'conflicting environment variable "{key}" is shadowed by corresponding '
                    "command-line flag (either unset environment variable or disable flag)"
                )
            text = environ[key]
            if text == "":
                continue
            used.add(key)
            try:
                values[flag] = _convert(flag, text)
            except ValueError as exc:
                raise ConfigError(f'invalid value "{text}" for {key}: {exc}') from None
            notices.append(f"recognized and used environment variable {key}={text}")
    for key in sorted(environ):
        if key in used or key in (_env_key(p, f) for p in ENV_PREFIXES for f in ("config-file", "version")):
            continue
        if any(key.startswith(p + "_") for p in ENV_PREFIXES):
            warnings.append(f"unrecognized environment variable {key}={environ[key]}")
    return values, warnings, notices


# ---- config file ------------------------------------------------------------------------------------

_GO_TYPES = {"str": "string", "bool": "bool", "int": "uint", "duration": "time.Duration"}


def _from_file(path: str) -> dict[str, Any]:
    """Read etcd's YAML config file into flag → parsed value."""
    try:
        with open(path, encoding="utf-8") as fh:
            document = yaml.safe_load(fh)
    except OSError as exc:
        raise ConfigError(f"open {path}: {exc.strerror.lower() if exc.strerror else exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"error converting YAML to JSON: {exc}") from None
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise ConfigError("error unmarshaling JSON: config file must be a YAML mapping")
    values: dict[str, Any] = {}
    for section, prefix in (("client-transport-security", ""), ("peer-transport-security", "peer-")):
        nested = document.get(section) or {}
        if not isinstance(nested, dict):
            raise ConfigError(f"error unmarshaling JSON: {section} must be a mapping")
        for key in ("cert-file", "key-file", "client-cert-auth", "trusted-ca-file", "auto-tls"):
            if key in nested:
                values[prefix + key] = _file_value(prefix + key, nested[key])
    for key, raw in document.items():
        if key not in FLAG_NAMES or key in _NOT_IN_FILE or raw is None:
            continue
        values[key] = _file_value(key, raw)
    return values


def _json_type(raw: Any) -> str:
    if isinstance(raw, bool):
        return "bool"
    if isinstance(raw, int | float):
        return "number"
    if isinstance(raw, str):
        return "string"
    return "array" if isinstance(raw, list) else "object" if isinstance(raw, dict) else type(raw).__name__


def _file_value(flag: str, raw: Any) -> Any:
    kind = _kind(flag)
    if flag == "initial-cluster-state" and isinstance(raw, str):
        return raw or "new"  # a plain string in etcd's file struct: checked by validate()
    if kind in ("strings",) and isinstance(raw, list):
        return tuple(str(x) for x in raw) if flag == "cipher-suites" else tuple(sorted({str(x) for x in raw}))
    if kind == "bool" and isinstance(raw, bool):
        return raw
    if kind == "int" and isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if kind == "duration" and isinstance(raw, int) and not isinstance(raw, bool):
        return raw / 1e9
    if isinstance(raw, str) and kind not in ("bool", "int"):
        if kind in ("urls", "cors") and raw == "":
            return _convert(flag, raw)
        try:
            return _convert(flag, raw)
        except ValueError as exc:
            raise ConfigError(f"unexpected error setting up {flag}: {exc}") from None
    go_type = _GO_TYPES.get(kind, "string")
    raise ConfigError(
        f"error unmarshaling JSON: json: cannot unmarshal {_json_type(raw)} into Go struct field "
        f"configYAML.{flag} of type {go_type}"
    )


# ---- entry point ------------------------------------------------------------------------------------


def parse_config(argv: Sequence[str], environ: Mapping[str, str]) -> ServerConfig:
    """Build the node's configuration from ``argv`` (without the program name) and ``environ``."""
    flags, warnings = _scan_argv(argv)
    notices: list[str] = []
    config_file = flags.get("config-file", "")
    if not config_file:
        config_file = environ.get("QUORUM_CONFIG_FILE") or environ.get("ETCD_CONFIG_FILE") or ""
    if config_file:
        values = _from_file(config_file)
        explicit_listen_client = False
        notices.append(
            "loaded server configuration, other configuration command line flags and environment "
            f"variables will be ignored if provided (path {config_file})"
        )
    else:
        env_values, env_warnings, env_notices = _from_environ(environ, flags)
        values = {**env_values, **flags}
        warnings += env_warnings
        notices += env_notices
        explicit_listen_client = "listen-client-urls" in values and "advertise-client-urls" not in values
    values.pop("config-file", None)
    kwargs = {flag.replace("-", "_"): value for flag, value in values.items()}
    config = ServerConfig(config_file=config_file, **kwargs)
    changes: dict[str, Any] = {}
    if explicit_listen_client and not _may_be_proxy(config):
        changes["advertise_client_urls"] = ()
    discovery = bool(config.discovery or config.discovery_srv)
    if not config.initial_cluster and not discovery:
        own = (f"{config.name}={url}" for url in config.initial_advertise_peer_urls)
        changes["initial_cluster"] = ",".join(own)
    if not config.data_dir:
        changes["data_dir"] = f"{config.name}.quorum"
    warnings += _deprecations(config)
    warnings += _replace_unusable(config, changes, notices)
    changes["warnings"] = tuple(warnings)
    changes["notices"] = tuple(notices)
    config = dataclasses.replace(config, **changes)
    try:
        validate(config)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return config


def _may_be_proxy(config: ServerConfig) -> bool:
    return config.proxy != "off" or (bool(config.discovery) and config.discovery_fallback == "proxy")


def _deprecations(config: ServerConfig) -> list[str]:
    notes = []
    if config.logger == "capnslog":
        notes.append("Deprecated '--logger=capnslog' flag is set; use '--logger=zap' flag instead")
    if config.debug:
        notes.append("Deprecated '--debug' flag is set (use '--log-level=debug' instead)")
    if config.log_output != ("default",):
        given = list(config.log_output)
        notes.append(f"Deprecated '--log-output' flag is set to {given}; use '--log-outputs'")
    return notes


def _replace_unusable(config: ServerConfig, changes: dict[str, Any], notices: list[str]) -> list[str]:
    """Values etcd accepts but swaps for a default (or only warns about) when the server starts."""
    warnings = []
    if config.snapshot_count == 0:
        changes["snapshot_count"] = 100000
        notices.append(
            "updating snapshot-count to default (given-snapshot-count 0, updated-snapshot-count 100000)"
        )
    if not 4 <= config.bcrypt_cost <= 31:
        changes["bcrypt_cost"] = 10
        given = config.bcrypt_cost
        warnings.append(f"use default bcrypt cost instead of the invalid given cost (given-cost {given})")
    if config.max_request_bytes > 10 * 1024 * 1024:
        warnings.append(f"exceeded recommended request limit (max-request-bytes {config.max_request_bytes})")
    if config.quota_backend_bytes > MAX_QUOTA_BACKEND_BYTES:
        warnings.append(
            f"quota exceeds the maximum value (quota-size-bytes {config.quota_backend_bytes}, "
            f"quota-maximum-size-bytes {MAX_QUOTA_BACKEND_BYTES})"
        )
    return warnings


def validate(config: ServerConfig) -> None:
    """etcd's ``Config.Validate`` and bootstrap checks, in etcd's order. Raises ``ValueError``."""
    _validate_logging(config)
    for urls in (config.listen_peer_urls, config.listen_client_urls, config.listen_metrics_urls):
        u.check_bind_urls(urls)
    for flag, urls in (
        ("--initial-advertise-peer-urls", config.initial_advertise_peer_urls),
        ("--advertise-client-urls", config.advertise_client_urls),
    ):
        try:
            u.check_host_urls(urls)
        except ValueError as exc:
            joined = ",".join(str(x) for x in urls)
            raise ValueError(f'{flag} "{joined}" must be "host:port" ({exc})') from None
    if config.initial_cluster_state not in ("new", "existing"):
        raise ValueError(f'unexpected clusterState "{config.initial_cluster_state}"')
    if sum(map(bool, (config.discovery, config.initial_cluster, config.discovery_srv))) > 1:
        raise ValueError(
            'multiple discovery or bootstrap flags are set. Choose one of "initial-cluster", "discovery" '
            'or "discovery-srv"'
        )
    _validate_timing(config)
    if config.listen_client_urls and not config.advertise_client_urls and not _may_be_proxy(config):
        raise ValueError("--advertise-client-urls is required when --listen-client-urls is set explicitly")
    if config.auto_compaction_mode not in ("", "periodic", "revision"):
        raise ValueError(f'unknown auto-compaction-mode "{config.auto_compaction_mode}"')
    _compaction_retention(config.auto_compaction_mode, config.auto_compaction_retention)
    checkpoint = config.experimental_enable_lease_checkpoint
    if config.experimental_enable_lease_checkpoint_persist and not checkpoint:
        raise ValueError(
            "setting experimental-enable-lease-checkpoint-persist requires "
            "experimental-enable-lease-checkpoint"
        )
    if config.discovery and not config.is_new_cluster:
        raise ValueError("discovery URL should not be set when joining existing initial cluster")
    if not config.discovery and not config.discovery_srv:
        _validate_initial_cluster(config)


def _validate_logging(config: ServerConfig) -> None:
    if config.logger not in ("zap", "capnslog"):
        raise ValueError(f'unknown logger option "{config.logger}"')
    if config.log_level not in ("debug", "info", "warn", "error", "dpanic", "panic", "fatal"):
        raise ValueError(f'unknown level "{config.log_level}"')
    outputs = config.log_outputs
    if config.log_output != ("default",):
        if config.log_outputs != ("default",):
            raise ValueError("both '--log-output' and '--log-outputs' are set; only set '--log-outputs'")
        outputs = config.log_output
    if config.logger == "capnslog":
        if len(outputs) != 1:
            given = list(outputs)
            raise ValueError(f"--logger=capnslog supports only 1 value in '--log-outputs', got {given}")
        if outputs[0] not in ("default", "stderr", "stdout"):
            supported = '"default", "stderr", "stdout"'
            raise ValueError(f'unknown log-output "{outputs[0]}" (only supports {supported})')
    elif len(outputs) > 1 and "default" in outputs:
        raise ValueError('multi logoutput for "default" is not supported yet')


def _validate_timing(config: ServerConfig) -> None:
    tick, election = config.heartbeat_interval, config.election_timeout
    if tick <= 0:
        raise ValueError(f"--heartbeat-interval must be >0 (set to {tick}ms)")
    if election <= 0:
        raise ValueError(f"--election-timeout must be >0 (set to {election}ms)")
    if 5 * tick > election:
        raise ValueError(
            f"--election-timeout[{election}ms] should be at least as 5 times as "
            f"--heartbeat-interval[{tick}ms]"
        )
    if election > MAX_ELECTION_MS:
        raise ValueError(
            f"--election-timeout[{election}ms] is too long, and should be set less than {MAX_ELECTION_MS}ms"
        )


def validate_initial_cluster(config: ServerConfig) -> None:
    """etcd's bootstrap checks of name, --initial-cluster and --initial-advertise-peer-urls (also
    run by ``snapshot restore``); raises ValueError with etcd's messages."""
    _validate_initial_cluster(config)


def _validate_initial_cluster(config: ServerConfig) -> None:
    """The checks etcd makes when it bootstraps or joins: run early, with etcd's messages."""
    peers = config.initial_peers
    mine = peers.get(config.name)
    if not mine:
        raise ValueError(f'couldn\'t find local name "{config.name}" in the initial cluster configuration')
    all_urls = [str(url) for urls in peers.values() for url in urls]
    if len(all_urls) != len(set(all_urls)):
        raise ValueError(f"initial cluster {u.format_initial_cluster(peers)} has duplicate url")
    if not config.is_new_cluster:
        return
    advertised = {str(url) for url in config.initial_advertise_peer_urls}
    listed = {str(url) for url in mine}
    ap_text = ",".join(sorted(advertised))
    if listed - advertised:
        missing = ",".join(f"{config.name}={url}" for url in sorted(listed - advertised))
        raise ValueError(
            f"--initial-cluster has {missing} but missing from --initial-advertise-peer-urls={ap_text}"
        )
    if advertised - listed:
        own = u.format_initial_cluster({config.name: config.initial_advertise_peer_urls})
        missing = ",".join(sorted(advertised - listed))
        raise ValueError(
            f"--initial-advertise-peer-urls has {missing} but missing from --initial-cluster={own}"
        )


def _compaction_retention(mode: str, text: str) -> float:
    """etcd's rule: a non-negative decimal integer is hours (periodic) or revisions (revision); anything
    else must be a Go duration (in revision mode etcd then counts its nanoseconds as revisions)."""
    body = text[1:] if text[:1] == "+" else text
    if body.isdigit():
        return float(int(body)) * (3600.0 if mode == "periodic" else 1.0)
    try:
        seconds = u.parse_duration(text)
    except ValueError as exc:
        raise ValueError(f"error parsing CompactionRetention: {exc}") from None
    return seconds if mode != "revision" else float(round(seconds * 1e9))


# ---- help and version -------------------------------------------------------------------------------


def version_text() -> str:
    """etcd's ``--version`` layout, with our name first and the etcd API we speak second."""
    machine = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    return (
        f"{PROGRAM} Version: {quorum_version()}\n"
        f"etcd API Version: {ETCD_API_VERSION}\n"
        "Git SHA: Not provided\n"
        f"Python Version: {platform.python_version()}\n"
        f"Python OS/Arch: {sys.platform}/{machine}\n"
    )


def usage_text() -> str:
    return (
        "Usage:\n\n"
        f"  {PROGRAM} [flags]\n    Start a quorum (etcd 3.4 compatible) server.\n\n"
        f"  {PROGRAM} --version\n    Show the version of quorum.\n\n"
        f"  {PROGRAM} -h | --help\n    Show the help information about quorum.\n\n"
        f"  {PROGRAM} --config-file\n    Read all settings from a YAML file; command-line flags and\n"
        "    environment variables are then ignored.\n"
    )


def _default_text(flag: str) -> str:
    if flag == "data-dir":
        return "${name}.quorum"
    if flag == "initial-cluster":
        return "default=http://localhost:2380"
    default = _FIELDS[flag.replace("-", "_")].default
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, float):
        return u.format_duration(default)
    if isinstance(default, tuple):
        return ",".join(str(x) for x in default)
    return str(default)


def help_text() -> str:
    """Usage, then every flag with its default, one per line, grouped as the dataclass groups them."""
    lines = [usage_text(), "Flags (every etcd 3.4 server flag; the module docs say which are honoured):"]
    lines += [f"  --{flag} '{_default_text(flag)}'" for flag in FLAG_NAMES]
    lines.append("Environment: ETCD_<FLAG> or QUORUM_<FLAG> (upper case, '-' as '_') for flags not given.")
    return "\n".join(lines) + "\n"
