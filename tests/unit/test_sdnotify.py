"""sd_notify: the member tells systemd it is ready through $NOTIFY_SOCKET, as etcd does."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from cluster.server.sdnotify import notify


def test_ready_is_sent_to_a_socket_path(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind(path)
        assert notify(path)
        assert manager.recv(64) == b"READY=1"


def test_an_at_sign_names_the_abstract_namespace() -> None:
    name = f"quorum-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind("\0" + name)
        assert notify("@" + name, "STOPPING=1")
        assert manager.recv(64) == b"STOPPING=1"


def test_without_a_service_manager_nothing_is_sent() -> None:
    assert not notify(None)
    assert not notify("")
