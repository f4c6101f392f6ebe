"""Many seeded chaos runs in a row: ``python -m cluster.testing.chaos.soak --runs 100`` (or ``scripts/soak``).

Each run is its own ``python -m cluster.testing.chaos`` process (a hung or crashed run cannot take the
soak down, and each cleans up after itself), with a hard timeout. Fault sets rotate with the seed so every
kind is exercised alone and mixed with the others. One line per run goes to stdout and to the log file;
failed runs keep their report directory, whose path the line gives.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from cluster.testing.chaos.front import FRONTS
from cluster.testing.procs import REPO_ROOT, _python_env

ROTATION = (
    "kill,pause,partition,compact,defrag",
    "kill",
    "pause",
    "partition",
    "delay,loss",
    "compact,defrag",
    "member,kill",
    "diskfull,compact",
    "kill,pause,partition,delay,loss,compact,defrag,member,diskfull",
    "killall,kill,partition,compact,member",
)


def faults_for(seed: int) -> str:
    return ROTATION[seed % len(ROTATION)]


def one_run(seed: int, duration: float, target: str, timeout: float, front: str = "") -> tuple[str, str]:
    """(verdict word, the run's summary) for one seed."""
    cmd = [
        sys.executable, "-m", "cluster.testing.chaos", f"--seed={seed}", f"--duration={duration}",
        f"--faults={faults_for(seed)}", f"--target={target}", *([f"--front={front}"] if front else []),
    ]  # fmt: skip
    out = subprocess.PIPE
    proc = subprocess.Popen(cmd, stdout=out, stderr=out, text=True, cwd=REPO_ROOT, env=_python_env(None))
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()  # the runner closes its cluster on SIGTERM
        try:
            stdout, stderr = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
        return "TIMEOUT", f"no verdict within {timeout}s\n{stdout}{stderr[-3000:]}"
    words = {0: "PASS", 1: "VIOLATION", 2: "INCONCLUSIVE"}
    output = (stdout + stderr[-3000:]).strip()
    return words.get(proc.returncode, f"ERROR({proc.returncode})"), output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster.testing.chaos.soak", description=__doc__)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--target", choices=("quorum", "etcd"), default="quorum")
    parser.add_argument("--front", choices=FRONTS, help="every run with this proxy in front (see runner)")
    parser.add_argument("--log", type=Path, default=Path("soak.log"))
    args = parser.parse_args(argv)
    tally: Counter[str] = Counter()
    started = time.monotonic()
    with args.log.open("a") as log:
        for seed in range(args.first_seed, args.first_seed + args.runs):
            word, output = one_run(seed, args.duration, args.target, args.duration + 300, args.front or "")
            tally[word] += 1
            line = f"seed={seed} faults={faults_for(seed)} {word}"
            detail = output if word != "PASS" else "\n".join(output.splitlines()[1:6])
            text = f"{line}\n{detail}\n"
            print(text, end="", flush=True)
            log.write(text)
            log.flush()
        total = ", ".join(f"{k}={v}" for k, v in sorted(tally.items()))
        took = time.monotonic() - started
        summary = f"soak: {args.runs} runs from seed {args.first_seed}, {total}, {took:.0f}s\n"
        print(summary, end="")
        log.write(summary)
    return 0 if tally["PASS"] == args.runs else 1


if __name__ == "__main__":
    sys.exit(main())
