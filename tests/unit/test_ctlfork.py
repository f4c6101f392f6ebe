"""The quorumctl fork server runs a command line exactly as a fresh ``python -m cluster.ctl`` does."""

from __future__ import annotations

import os
import subprocess

import pytest

from cluster.testing import ctlfork
from cluster.testing.ports import free_port

DEAD = f"127.0.0.1:{free_port()}"

LINES: list[tuple[list[str], bytes | None, dict[str, str]]] = [
    (["version"], None, {}),
    (["no-such-command"], None, {}),
    (["put", "--no-such-flag"], None, {}),
    ([f"--endpoints={DEAD}", "--dial-timeout=200ms", "--command-timeout=300ms", "put", "k"],
     b"from stdin\n", {}),
    (["version"], None, {"ETCDCTL_API": "2"}),
    (["--help"], None, {}),
]


def _both(
    argv: list[str], stdin: bytes | None, extra: dict[str, str]
) -> tuple[subprocess.CompletedProcess[bytes], subprocess.CompletedProcess[bytes]]:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}, **extra}
    forked = ctlfork.run([*ctlfork.QUORUMCTL, *argv], input=stdin, env=env, timeout=30)
    plain = subprocess.run(
        [*ctlfork.QUORUMCTL, *argv], input=stdin, capture_output=True, env=ctlfork_env(env), timeout=30,
        check=False,
    )
    return forked, plain


def ctlfork_env(env: dict[str, str]) -> dict[str, str]:
    out = dict(env)
    rest = os.pathsep + out["PYTHONPATH"] if out.get("PYTHONPATH") else ""
    out["PYTHONPATH"] = str(ctlfork.REPO_ROOT) + rest
    return out


@pytest.mark.parametrize("argv,stdin,extra", LINES, ids=[" ".join(line[0])[:40] for line in LINES])
def test_forked_run_prints_and_exits_as_a_fresh_process(
    argv: list[str], stdin: bytes | None, extra: dict[str, str]
) -> None:
    forked, plain = _both(argv, stdin, extra)
    assert forked.returncode == plain.returncode
    assert forked.stdout == plain.stdout
    strip = [line for line in plain.stderr.splitlines() if b'"ts":' not in line]
    assert [line for line in forked.stderr.splitlines() if b'"ts":' not in line] == strip


def test_a_run_past_its_timeout_is_killed_and_raises_like_subprocess() -> None:
    argv = [*ctlfork.QUORUMCTL, f"--endpoints={DEAD}", "watch", "k"]
    with pytest.raises(subprocess.TimeoutExpired):
        ctlfork.run(argv, timeout=1.0)


def test_working_directory_is_the_callers(tmp_path: object) -> None:
    out = ctlfork.run([*ctlfork.QUORUMCTL, "snapshot", "status", "missing.db"], cwd=str(tmp_path), timeout=30)
    assert out.returncode != 0
    assert b"missing.db" in out.stderr
