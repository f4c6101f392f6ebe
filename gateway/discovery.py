"""``--discovery-srv``: find the members from DNS SRV records, as etcd's gateway does.

Two names are looked up (``NAME`` is ``--discovery-srv-name``, appended with a dash when given):
``_etcd-client-ssl[-NAME]._tcp.DOMAIN`` (members reached over TLS) and ``_etcd-client[-NAME]._tcp.DOMAIN``
(plain). Discovery fails only when both lookups fail. Each record keeps its priority and weight for
the pool's choice rule.

Unless ``--insecure-discovery`` is given, only TLS members are kept and each must accept a TCP connection
(etcd's check); with ``--trusted-ca-file`` a TLS handshake verified against that CA, for the domain's
name, is required as well. Discovery runs once at start-up, before the event loop, so it is plain
blocking code.
"""

from __future__ import annotations

import logging
import socket
import ssl

import dns.exception
import dns.resolver

from gateway.config import Endpoint

log = logging.getLogger("quorum.gateway.discovery")
VALIDATE_TIMEOUT = 5.0


class DiscoveryError(RuntimeError):
    pass


def srv_names(domain: str, service_name: str = "") -> list[tuple[str, str]]:
    """``(record name, scheme)`` pairs to look up, TLS first."""
    suffix = f"-{service_name}" if service_name else ""
    domain = domain.rstrip(".")
    return [
        (f"_etcd-client-ssl{suffix}._tcp.{domain}.", "https"),
        (f"_etcd-client{suffix}._tcp.{domain}.", "http"),
    ]


def lookup(
    domain: str, service_name: str = "", resolver: dns.resolver.Resolver | None = None
) -> list[Endpoint]:
    resolver = resolver or dns.resolver.Resolver()
    found: list[Endpoint] = []
    errors: list[str] = []
    for name, scheme in srv_names(domain, service_name):
        try:
            answer = resolver.resolve(name, "SRV")
        except dns.exception.DNSException as exc:
            errors.append(f"lookup {name}: {exc}")
            continue
        for record in answer:
            target = record.target.to_text().rstrip(".")
            found.append(Endpoint(target, int(record.port), int(record.priority), int(record.weight), scheme))
    if len(errors) == len(srv_names(domain, service_name)):
        raise DiscoveryError(f"dns lookup errors: {' and '.join(errors)}")
    return found


def _accepts(endpoint: Endpoint, domain: str, ca_file: str) -> str | None:
    """None if ``endpoint`` passes the secure-discovery check, else why not."""
    if endpoint.scheme != "https":
        return f"{endpoint.scheme}://{endpoint.address} is insecure"
    try:
        with socket.create_connection((endpoint.host, endpoint.port), timeout=VALIDATE_TIMEOUT) as sock:
            if ca_file:
                context = ssl.create_default_context(cafile=ca_file)
                with context.wrap_socket(sock, server_hostname=domain.rstrip(".")):
                    pass
    except (OSError, ssl.SSLError) as exc:
        return f"https://{endpoint.address} failed to dial ({exc})"
    return None


def discover(
    domain: str,
    service_name: str = "",
    insecure: bool = False,
    ca_file: str = "",
    resolver: dns.resolver.Resolver | None = None,
) -> list[Endpoint]:
    """The members named by ``domain``'s SRV records that pass validation (see the module doc)."""
    found = lookup(domain, service_name, resolver)
    log.info(
        "discovered cluster from SRV",
        extra={"srv-server": domain, "endpoints": [f"{e.scheme}://{e.address}" for e in found]},
    )
    if insecure:
        return found
    kept: list[Endpoint] = []
    for endpoint in found:
        problem = _accepts(endpoint, domain, ca_file)
        if problem is None:
            kept.append(endpoint)
        else:
            log.warning(
                "failed to validate discovered endpoint", extra={"srv-server": domain, "error": problem}
            )
    return kept
