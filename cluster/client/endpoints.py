"""Endpoint strings as etcd clients accept them: ``host:port``, ``http://host:port``, ``https://...``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One client URL: ``raw`` as given, ``target`` for gRPC, ``secure`` when it asks for TLS."""

    raw: str
    target: str
    secure: bool

    @classmethod
    def parse(cls, raw: str) -> Endpoint:
        text = raw.strip()
        secure = False
        for scheme, is_secure in (("https://", True), ("http://", False), ("unixs://", True)):
            if text.startswith(scheme):
                text = text[len(scheme) :]
                secure = is_secure
                break
        if text.startswith("unix://"):
            return cls(raw, text, False)
        return cls(raw, text.rstrip("/"), secure)
