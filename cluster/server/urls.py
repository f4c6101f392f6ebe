"""URLs, URL lists, the initial-cluster map and Go-style scalar values, as etcd's flags parse them.

Everything here is pure: a string in, a value or ``ValueError`` out. The messages of the ``ValueError``s
are etcd's (``URL scheme must be http, https, unix, or unixs: foo``), because the config layer quotes
them verbatim in its own errors.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

_SCHEMES = ("http", "https", "unix", "unixs")


@dataclass(frozen=True, slots=True, order=True)
class URL:
    """One parsed URL of the form ``scheme://host:port``.

    ``netloc`` is kept exactly as written (IPv6 hosts keep their brackets) so that ``str(url)`` is what
    etcd prints and what member ids are hashed over.
    """

    scheme: str
    netloc: str

    def __str__(self) -> str:
        return f"{self.scheme}://{self.netloc}"

    @property
    def host(self) -> str:
        """Host without port and without IPv6 brackets."""
        return split_host_port(self.netloc)[0]

    @property
    def port(self) -> int:
        return int(split_host_port(self.netloc)[1])

    @property
    def is_tls(self) -> bool:
        return self.scheme in ("https", "unixs")

    @property
    def is_unix(self) -> bool:
        return self.scheme in ("unix", "unixs")

    def bind_host(self) -> str:
        """The address to bind: etcd accepts ``localhost`` for a listen URL; we bind it to 127.0.0.1."""
        return "127.0.0.1" if self.host == "localhost" else self.host


def split_host_port(hostport: str) -> tuple[str, str]:
    """Go's ``net.SplitHostPort``: ``host:port`` or ``[v6]:port``; the port may be empty, not missing."""
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0 or not hostport[end + 1 :].startswith(":"):
            raise ValueError(f"address {hostport}: missing port in address")
        host, port = hostport[1:end], hostport[end + 2 :]
    else:
        if hostport.count(":") != 1:
            reason = "missing port in address" if ":" not in hostport else "too many colons in address"
            raise ValueError(f"address {hostport}: {reason}")
        host, port = hostport.split(":")
    if ":" in port or "]" in port or "[" in port:
        raise ValueError(f"address {hostport}: too many colons in address")
    return host, port


_URL_RE = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*):(?P<rest>.*)$")


def parse_url(text: str) -> URL:
    """Parse one URL with the rules of etcd's ``types.NewURLs``."""
    raw = text.strip()
    match = _URL_RE.match(raw)
    scheme = match.group("scheme").lower() if match else ""
    if scheme not in _SCHEMES:
        raise ValueError(f"URL scheme must be http, https, unix, or unixs: {raw}")
    rest = match.group("rest") if match else ""
    if not rest.startswith("//"):
        raise ValueError(f'URL address does not have the form "host:port": {raw}')
    rest = rest[2:]
    cut = min((i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    netloc, tail = rest[:cut], rest[cut:]
    if "@" in netloc:
        netloc = netloc.rsplit("@", 1)[1]
    try:
        split_host_port(netloc)
    except ValueError:
        raise ValueError(f'URL address does not have the form "host:port": {raw}') from None
    path = tail.split("?", 1)[0].split("#", 1)[0]
    if path:
        raise ValueError(f"URL must not contain a path: {raw}")
    return URL(scheme, netloc)


def parse_urls(text: str | Sequence[str]) -> tuple[URL, ...]:
    """A comma-separated list (or a sequence) of URLs, de-duplicated and sorted like etcd's flags."""
    parts = text.split(",") if isinstance(text, str) else list(text)
    if not parts:
        raise ValueError("no valid URLs given")
    return tuple(sorted({parse_url(p) for p in parts}, key=str))


def check_bind_urls(urls: Iterable[URL]) -> None:
    """Listen URLs must name an IP address (or ``localhost``), never a DNS name."""
    for url in urls:
        if url.is_unix or url.host == "localhost":
            continue
        try:
            ipaddress.ip_address(url.host)
        except ValueError:
            raise ValueError(f"expected IP in URL for binding ({url})") from None


def check_host_urls(urls: Iterable[URL]) -> None:
    """Advertised URLs must carry a non-empty host."""
    for url in urls:
        if not url.host:
            raise ValueError(f"unexpected empty host ({url})")


def parse_initial_cluster(text: str) -> dict[str, tuple[URL, ...]]:
    """``name1=url1,name1=url2,name2=url3`` into ``{name: sorted urls}`` (etcd's ``types.NewURLsMap``)."""
    grouped: dict[str, list[str]] = {}
    for item in text.split(","):
        if not item:
            continue
        name, _, value = item.partition("=")
        grouped.setdefault(name, []).append(value)
    return {name: parse_urls(values) for name, values in grouped.items()}


def format_initial_cluster(members: dict[str, tuple[URL, ...]]) -> str:
    """The inverse of :func:`parse_initial_cluster`, sorted like etcd's ``URLsMap.String``."""
    return ",".join(sorted(f"{name}={url}" for name, urls in members.items() for url in urls))


_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "\u00b5s": 1e-6,
    "\u03bcs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")


def parse_duration(text: str) -> float:
    """Go's ``time.ParseDuration`` (``1h30m``, ``1.5s``, ``100ms``, ``0``) into seconds."""
    s = text
    sign = 1.0
    if s[:1] in "+-" and s:
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise ValueError(f'time: invalid duration "{text}"')
    total = 0.0
    pos = 0
    while pos < len(s):
        match = _DURATION_PART.match(s, pos)
        if match is None:
            if re.match(r"(\d+\.?\d*|\.\d+)$", s[pos:]):
                raise ValueError(f'time: missing unit in duration "{text}"')
            raise ValueError(f'time: invalid duration "{text}"')
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    return sign * total


def format_duration(seconds: float) -> str:
    """A compact Go-like rendering (``5s``, ``2h0m0s``, ``100ms``) for help text and logs."""
    if seconds == 0:
        return "0s"
    if abs(seconds) < 1:
        return f"{seconds * 1000:g}ms"
    whole = int(seconds)
    hours, rem = divmod(whole, 3600)
    minutes, secs = divmod(rem, 60)
    frac = seconds - whole
    sec_text = f"{secs + frac:g}s"
    if hours:
        return f"{hours}h{minutes}m{sec_text}"
    if minutes:
        return f"{minutes}m{sec_text}"
    return sec_text


_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


def parse_bool(text: str) -> bool:
    """Go's ``strconv.ParseBool``."""
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError("parse error")


def parse_int(text: str, bits: int, signed: bool) -> int:
    """Go's ``strconv.Parse{Int,Uint}(s, 0, bits)``: base prefixes, ``_`` separators, range checks."""
    body = text[1:] if text[:1] in "+-" else text
    if not body or body != body.strip():
        raise ValueError("parse error")
    if not signed and text[:1] in "+-":
        raise ValueError("parse error")
    try:
        octal = len(body) > 1 and body[0] == "0" and body[1].isdigit()
        value = int(body, 8) if octal else int(body, 0)
    except ValueError:
        raise ValueError("parse error") from None
    if text.startswith("-"):
        value = -value
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if not low <= value <= high:
        raise ValueError("value out of range")
    return value
