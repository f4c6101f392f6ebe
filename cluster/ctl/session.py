"""What every networked command shares: global flags, ETCDCTL_* environment, output format,
and the client, set up in the order etcdctl does it (so errors surface in the same order).
"""

from __future__ import annotations

import datetime
import getpass
import os
import sys
import uuid
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from cluster.client import CallFailure, Client, Endpoint, TLSConfig, go_status_text
from cluster.ctl.cobra import Invocation
from cluster.ctl.durations import SECOND
from cluster.ctl.exits import EXIT_BAD_ARGS, EXIT_BAD_FEATURE, EXIT_ERROR, CtlExit
from cluster.ctl.flags import FlagError, FlagSpec
from cluster.ctl.printers import Printer, SimplePrinter, new_printer

GLOBAL_FLAGS: tuple[FlagSpec, ...] = (
    FlagSpec("endpoints", "stringSlice", ["127.0.0.1:2379"], "gRPC endpoints"),
    FlagSpec("debug", "bool", False, "enable client-side debug logging"),
    FlagSpec(
        "write-out", "string", "simple", "set the output format (fields, json, protobuf, simple, table)", "w"
    ),
    FlagSpec("hex", "bool", False, "print byte strings as hex encoded strings"),
    FlagSpec("dial-timeout", "duration", 2 * SECOND, "dial timeout for client connections"),
    FlagSpec(
        "command-timeout",
        "duration",
        5 * SECOND,
        "timeout for short running command (excluding dial timeout)",
    ),
    FlagSpec("keepalive-time", "duration", 2 * SECOND, "keepalive time for client connections"),
    FlagSpec("keepalive-timeout", "duration", 6 * SECOND, "keepalive timeout for client connections"),
    FlagSpec("insecure-transport", "bool", True, "disable transport security for client connections"),
    FlagSpec("insecure-discovery", "bool", True, "accept insecure SRV records describing cluster endpoints"),
    FlagSpec(
        "insecure-skip-tls-verify",
        "bool",
        False,
        "skip server certificate verification "
        "(CAUTION: this option should be enabled only for testing purposes)",
    ),
    FlagSpec("cert", "string", "", "identify secure client using this TLS certificate file"),
    FlagSpec("key", "string", "", "identify secure client using this TLS key file"),
    FlagSpec(
        "cacert", "string", "", "verify certificates of TLS-enabled secure servers using this CA bundle"
    ),
    FlagSpec(
        "user", "string", "", "username[:password] for authentication (prompt if password is not supplied)"
    ),
    FlagSpec(
        "password",
        "string",
        "",
        "password for authentication (if this option is used, --user option shouldn't include password)",
    ),
    FlagSpec(
        "discovery-srv",
        "string",
        "",
        "domain name to query for SRV records describing cluster endpoints",
        "d",
    ),
    FlagSpec("discovery-srv-name", "string", "", "service name to query when using DNS discovery"),
)


def _capnslog_line(level: str, message: str) -> bytes:
    now = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S.%f")
    return f"{now} {level} | pkg/flags: {message}\n".encode()


def zap_string(text: str) -> str:
    """A JSON string as zap's encoder writes it (no HTML escaping)."""
    out = ['"']
    for char in text:
        code = ord(char)
        if char in ('"', "\\"):
            out.append("\\" + char)
        elif char == "\n":
            out.append("\\n")
        elif char == "\r":
            out.append("\\r")
        elif char == "\t":
            out.append("\\t")
        elif code < 0x20:
            out.append(f"\\u{code:04x}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def zap_timestamp() -> str:
    now = datetime.datetime.now().astimezone()
    offset = now.strftime("%z")
    zone = "Z" if offset in ("+0000", "-0000") else offset
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}" + zone


@dataclass
class Session:
    """One run of a command: its invocation, standard streams and (once made) client config."""

    inv: Invocation
    stdin: BinaryIO
    stdout: BinaryIO
    stderr: BinaryIO
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    printer: Printer | None = None
    env_keys_consumed: tuple[str, ...] = ()
    _env_applied: bool = False

    def flag(self, name: str) -> object:
        return self.inv.flags.get(name)

    def seconds(self, name: str) -> float:
        value = self.inv.flags.get(name)
        assert isinstance(value, int)
        return value / 1e9

    def out(self, data: bytes | str) -> None:
        self.stdout.write(data.encode() if isinstance(data, str) else data)

    def err(self, data: bytes | str) -> None:
        self.stderr.write(data.encode() if isinstance(data, str) else data)

    # ---- etcdctl's clientConfigFromCmd, step by step ----
    def apply_env(self) -> None:
        """ETCDCTL_<FLAG> fills global flags not given on the command line; conflicts are fatal."""
        if self._env_applied:
            return
        self._env_applied = True
        used: set[str] = set(self.env_keys_consumed)
        already: set[str] = set()
        for spec in self.inv.command.inherited_specs():
            key = "ETCDCTL_" + spec.name.replace("-", "_").upper()
            if spec.name in self.inv.flags.changed:
                already.add(key)
                continue
            value = self.environ.get(key, "")
            if value:
                used.add(key)
                try:
                    self.inv.flags.set(spec, value)
                except FlagError:
                    pass
        for key, value in self.environ.items():
            if key in used:
                continue
            if key in already:
                self.stdout.flush()
                self.err(
                    _capnslog_line(
                        "C",
                        f'conflicting environment variable "{key}" is shadowed by corresponding command-line '
                        "flag (either unset environment variable or disable flag)",
                    )
                )
                raise CtlExit(EXIT_ERROR, None)
            if key.startswith("ETCDCTL_"):
                self.err(_capnslog_line("W", f"unrecognized environment variable {key}={value}"))

    def debug_dump(self) -> None:
        if not self.flag("debug"):
            return
        for spec in self.inv.command.inherited_specs():
            key = "ETCDCTL_" + spec.name.replace("-", "_").upper()
            self.err(f"{key}={spec.value_text(self.inv.flags.get(spec.name))}\n")

    def init_display(self) -> Printer:
        fmt = str(self.flag("write-out"))
        printer = new_printer(fmt, bool(self.flag("hex")))
        if printer is None:
            raise CtlExit(EXIT_BAD_FEATURE, "unsupported output format")
        printer.out, printer.err = self.stdout, self.stderr
        self.printer = printer
        return printer

    def endpoints(self) -> list[str]:
        if self.flag("discovery-srv"):
            raise CtlExit(EXIT_ERROR, "DNS SRV discovery is not supported by quorumctl")
        value = self.flag("endpoints")
        assert isinstance(value, list)
        return [e.strip() for e in value]

    def tls(self) -> TLSConfig | None:
        paths: dict[str, str | None] = {}
        for name in ("cert", "key", "cacert"):
            value = str(self.flag(name))
            if value == "" and name in self.inv.flags.changed:
                raise CtlExit(EXIT_BAD_ARGS, f"empty string is passed to --{name} option")
            paths[name] = value or None
        if any(paths.values()) or not self.flag("insecure-transport"):
            return TLSConfig(cert_file=paths["cert"], key_file=paths["key"], ca_file=paths["cacert"])
        return None

    def credentials(self) -> tuple[str | None, str | None]:
        user, password = str(self.flag("user")), str(self.flag("password"))
        if not user:
            return None, None
        if password:
            return user, password
        name, colon, secret = user.partition(":")
        if colon:
            return name, secret
        self.stdout.flush()
        return user, getpass.getpass("Password: ")

    def client(self, endpoints: list[str] | None = None) -> Client:
        """etcdctl's mustClientFromCmd: env, debug dump, endpoints, TLS, auth, display, client."""
        self.apply_env()
        self.debug_dump()
        eps = self.endpoints() if endpoints is None else endpoints
        tls = self.tls()
        user, password = self.credentials()
        if self.printer is None:
            self.init_display()
        return self.new_client(eps, tls, user, password)

    def new_client(
        self, endpoints: list[str], tls: TLSConfig | None, user: str | None, password: str | None
    ) -> Client:
        client_id = f"client-{uuid.uuid4()}"
        first = Endpoint.parse(endpoints[0]).target if endpoints else ""

        def warn(failure: CallFailure) -> None:
            if failure.pinned:
                target = f"passthrough:///{Endpoint.parse(failure.endpoint).target}"
            else:
                target = f"endpoint://{client_id}/{first}"
            error = go_status_text(failure.code, failure.details)
            line = (
                f'{{"level":"warn","ts":"{zap_timestamp()}","caller":"clientv3/retry_interceptor.go:62",'
                f'"msg":"retrying of unary invoker failed","target":{zap_string(target)},'
                f'"attempt":{failure.attempt},"error":{zap_string(error)}}}\n'
            )
            self.err(line)

        return Client(
            endpoints,
            dial_timeout=self.seconds("dial-timeout"),
            keepalive_time=self.seconds("keepalive-time"),
            keepalive_timeout=self.seconds("keepalive-timeout"),
            username=user,
            password=password,
            tls=tls,
            on_call_failed=warn,
        )

    def simple_printer(self) -> SimplePrinter | None:
        return self.printer if isinstance(self.printer, SimplePrinter) else None


def stdin_text(stream: BinaryIO) -> str:
    return stream.read().decode("utf-8", errors="surrogateescape")


def default_streams() -> tuple[BinaryIO, BinaryIO, BinaryIO]:
    return sys.stdin.buffer, sys.stdout.buffer, sys.stderr.buffer


Handler = Callable[[Session], Coroutine[Any, Any, None]]
"""A command's body: runs with the session of one invocation."""

Runner = Callable[[Handler], Callable[[Invocation], object]]
"""Turns a Handler into a Command's ``run`` (the tree decides how sessions and loops are made)."""
