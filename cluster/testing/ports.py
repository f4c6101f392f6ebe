"""Free TCP ports on loopback for test processes.

The kernel hands out a free ephemeral port when binding to port 0; we close the socket and give the
number to a child process. Between close and the child's bind another process could take the port, so
callers that can should retry on "address already in use". Within one Python process a port number is never
handed out twice, whatever the address (a harness may pick a port on one loopback address and bind it
on another) (several engineers' suites run in parallel on the same machine, so the small race with
other processes remains, which is why the ephemeral range is used rather than fixed numbers).
"""

from __future__ import annotations

import socket
import threading

LOOPBACK = "127.0.0.1"

_lock = threading.Lock()
_handed_out: set[int] = set()


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port on ``host`` that is free now and was not returned before by this process."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        with _lock:
            if port not in _handed_out:
                _handed_out.add(port)
                return port
    raise RuntimeError(f"no free port found on {host}")


def free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """Return ``count`` distinct free ports on ``host``."""
    return [free_port(host) for _ in range(count)]


def port_is_open(host: str, port: int, timeout: float = 0.2) -> bool:
    """True if something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
