"""systemd's readiness notification (sd_notify), as etcd sends it: ``READY=1`` once the member serves
clients, so a ``Type=notify`` unit is "started" only then (deploy/systemd/quorum.service).

The socket path comes from ``$NOTIFY_SOCKET``, read by the caller at the edge; ``@`` at its start
names Linux's abstract namespace.
"""

from __future__ import annotations

import socket


def notify(socket_path: str | None, state: str = "READY=1") -> bool:
    """Send ``state`` to the service manager; False when there is none to tell (no socket given)."""
    if not socket_path:
        return False
    address = "\0" + socket_path[1:] if socket_path.startswith("@") else socket_path
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(address)
        sock.sendall(state.encode())
    return True
