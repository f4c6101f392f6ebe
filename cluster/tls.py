"""TLS for the client and peer ports, from etcd's flags.

A `TLSInfo` is etcd's transport.TLSInfo: certificate, key, trusted CA, whether client certificates are
required, a CRL, cipher suites, and for --auto-tls / --peer-auto-tls a self-signed certificate made
once under the data dir (etcd's `fixtures/client` and `fixtures/peer`). Servers get an
`ssl.SSLContext` (our HTTP/2 engine terminates TLS with asyncio's SSL transport, with ALPN h2 and
http/1.1 so the JSON gateway and /metrics share the port as on etcd); peers dial with gRPC channel
credentials.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import logging
import os
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc

log = logging.getLogger("quorum.tls")

SELF_CERT_VALIDITY_DAYS = 365
"""etcd's --self-signed-cert-validity default (one year)."""

# Go's cipher suite names (what --cipher-suites takes) and OpenSSL's names for the TLS 1.2 suites.
_GO_TO_OPENSSL = {
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256": "ECDHE-ECDSA-AES128-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256": "ECDHE-RSA-AES128-SHA256",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA256": "AES128-SHA256",
}


class TLSError(ValueError):
    """A TLS setting that cannot work (the member refuses to start, as etcd does)."""


@dataclass(frozen=True)
class TLSInfo:
    cert_file: str = ""
    key_file: str = ""
    trusted_ca_file: str = ""
    client_cert_auth: bool = False
    crl_file: str = ""
    cipher_suites: tuple[str, ...] = ()
    self_signed: bool = False
    """Made by --auto-tls: clients cannot verify it (etcd's peers then skip verification)."""

    @property
    def empty(self) -> bool:
        return not self.cert_file and not self.key_file

    def server_context(self) -> ssl.SSLContext:
        """The SSLContext a server port terminates TLS with."""
        if self.empty:
            raise TLSError("TLS requires --cert-file and --key-file (or --auto-tls)")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2  # etcd 3.4: tls.VersionTLS12
        try:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise TLSError(
                f"failed to load certificate {self.cert_file} / key {self.key_file}: {exc}"
            ) from None
        if self.trusted_ca_file:
            try:
                ctx.load_verify_locations(cafile=self.trusted_ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise TLSError(f"failed to load trusted CA {self.trusted_ca_file}: {exc}") from None
        if self.client_cert_auth:
            if not self.trusted_ca_file:
                raise TLSError("client-cert-auth requires a trusted CA file (--trusted-ca-file)")
            ctx.verify_mode = ssl.CERT_REQUIRED
        elif self.trusted_ca_file:
            ctx.verify_mode = ssl.CERT_OPTIONAL
        if self.crl_file:
            try:
                ctx.load_verify_locations(cafile=self.crl_file)
            except (OSError, ssl.SSLError) as exc:
                raise TLSError(f"failed to load CRL {self.crl_file}: {exc}") from None
            ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
        if self.cipher_suites:
            ctx.set_ciphers(openssl_ciphers(self.cipher_suites))
        ctx.set_alpn_protocols(["h2", "http/1.1"])
        return ctx

    def channel_files(self) -> tuple[bytes | None, bytes | None, bytes | None]:
        """(root CA, private key, certificate chain) bytes for grpc.ssl_channel_credentials."""

        def read(path: str) -> bytes | None:
            return Path(path).read_bytes() if path else None

        return read(self.trusted_ca_file), read(self.key_file), read(self.cert_file)


def openssl_ciphers(go_names: Iterable[str]) -> str:
    names = []
    for name in go_names:
        openssl = _GO_TO_OPENSSL.get(name)
        if openssl is None:
            raise TLSError(f"unexpected TLS cipher suite {name!r}")
        names.append(openssl)
    return ":".join(names)


def client_info(cfg: object, data_dir: str) -> TLSInfo:
    """The client port's TLSInfo (empty when no TLS is configured)."""
    return _info(cfg, data_dir, "", "client")


def peer_info(cfg: object, data_dir: str) -> TLSInfo:
    return _info(cfg, data_dir, "peer_", "peer")


def _info(cfg: object, data_dir: str, prefix: str, fixture: str) -> TLSInfo:
    get = lambda name: getattr(cfg, prefix + name)  # noqa: E731
    crl = getattr(cfg, "peer_crl_file" if prefix else "client_crl_file")
    info = TLSInfo(
        cert_file=get("cert_file"),
        key_file=get("key_file"),
        trusted_ca_file=get("trusted_ca_file"),
        client_cert_auth=get("client_cert_auth"),
        crl_file=crl,
        cipher_suites=tuple(getattr(cfg, "cipher_suites", ())),
    )
    if get("auto_tls") and info.empty:
        urls = getattr(cfg, "listen_peer_urls" if prefix else "listen_client_urls")
        hosts = sorted({u.host for u in urls})
        cert, key = self_signed_cert(Path(data_dir) / "fixtures" / fixture, hosts)
        info = TLSInfo(cert_file=str(cert), key_file=str(key), crl_file=crl,
                       cipher_suites=info.cipher_suites, self_signed=True)
    elif get("auto_tls"):
        log.warning("ignoring auto TLS since certs given", extra={"scheme": fixture})
    return info


def self_signed_cert(directory: Path, hosts: Iterable[str]) -> tuple[Path, Path]:
    """etcd's transport.SelfCert: an ECDSA P-256 certificate for `hosts`, kept in `directory` and
    reused while it exists."""
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "etcd")]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "etcd")]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=SELF_CERT_VALIDITY_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    os.chmod(key_path, 0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    log.info("created self-signed certificate", extra={"path": str(cert_path), "hosts": list(hosts)})
    return cert_path, key_path


def common_name(peercert: Mapping[str, object] | None) -> str:
    """The subject CN of a verified peer certificate (ssl's getpeercert() dict), or ""."""
    if not peercert:
        return ""
    for rdn in peercert.get("subject", ()):  # type: ignore[attr-defined]
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return ""


class Dialer:
    """gRPC channels to other members' URLs: plain for http://, TLS for https:// with this member's
    certificate (for servers requiring client certificates) and trusted CA. With --auto-tls there is
    no CA to verify a self-signed certificate against; like etcd's peers (InsecureSkipVerify) we trust
    what the member presents, fetched once per URL and pinned."""

    def __init__(self, info: TLSInfo, options: Iterable[tuple[str, object]] = ()) -> None:
        self.info = info
        self._options = list(options)
        self._pinned: dict[str, bytes] = {}

    async def channel(self, url: str) -> grpc.aio.Channel:
        target = _target(url)
        if not url.startswith(("https://", "unixs://")):
            return grpc.aio.insecure_channel(target, options=self._options)
        root, key, chain = self.info.channel_files()
        if root is None and self.info.self_signed:
            root = self._pinned.get(target)
            if root is None:
                host, _, port = target.rpartition(":")
                pem = await asyncio.to_thread(ssl.get_server_certificate, (host.strip("[]"), int(port)))
                root = self._pinned[target] = pem.encode()
        creds = grpc.ssl_channel_credentials(root_certificates=root, private_key=key, certificate_chain=chain)
        return grpc.aio.secure_channel(target, creds, options=self._options)


def _target(url: str) -> str:
    scheme, _, rest = url.partition("://")
    if scheme in ("unix", "unixs"):
        return f"unix:{rest}"
    return rest.split("/", 1)[0]
