"""Test helpers for the gateway: run `python -m gateway start` as a real process on a free port.

`GatewayProcess` is a :class:`cluster.testing.procs.NodeProcess` (same start/kill/terminate/close and log
capture) whose "client port" is the gateway's listen address; it is ready when it logs "ready to proxy
client requests". Only tests import this module.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

from cluster.testing.procs import NodeProcess, NodeStartError, _python_env

READY_LOG_LINE = "ready to proxy client requests"


class GatewayProcess(NodeProcess):
    kind = "gateway"

    def __init__(self, endpoints: Sequence[str], flags: Sequence[str] = (), **kwargs: object) -> None:
        super().__init__("gateway", flags=flags, **kwargs)  # type: ignore[arg-type]
        self.endpoints = list(endpoints)

    def base_flags(self) -> list[str]:
        return [f"--endpoints={','.join(self.endpoints)}", f"--listen-addr={self.endpoint}"]

    def command(self, flags: Sequence[str]) -> list[str]:
        return [sys.executable, "-m", "gateway", "start", *flags]

    def process_env(self) -> dict[str, str]:
        return _python_env(super().process_env())

    def ready(self) -> bool:
        return READY_LOG_LINE in self.current_log()

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready():
            if self.proc is None or self.proc.poll() is not None:
                code = None if self.proc is None else self.proc.returncode
                raise NodeStartError(f"{self} exited with {code} while starting\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.kill()
                raise NodeStartError(f"{self} not ready after {timeout}s\n{self.log_tail()}")
            time.sleep(0.02)

    def rss_kib(self) -> int:
        """Resident memory of the gateway process (VmRSS from /proc), in KiB."""
        assert self.pid is not None
        with open(f"/proc/{self.pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS")
