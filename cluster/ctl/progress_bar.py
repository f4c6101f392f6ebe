"""The progress bar etcdctl's check commands draw (gopkg.in/cheggaaa/pb.v1 with format "Bom !").

On a terminal: counters, a bar as wide as the terminal allows, percent and time left, redrawn in
place every 200 ms. Not on a terminal (pb cannot read a width there) the bar itself is left out and
the line is just ``\\r 12 / 60   20.00% 00m48s``. Finishing draws the final state with the elapsed time
(Go's Duration format) and a newline.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from typing import BinaryIO

from cluster.ctl.durations import SECOND, format_duration

REFRESH_SECONDS = 0.2


def _time_left(seconds: float) -> str:
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{days}d" if whole > 86400 else ""
    if whole > 3600:
        text += f"{hours}h"
    return f"{text}{minutes:02d}m{secs:02d}s"


def _terminal_width(stream: BinaryIO) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError, AttributeError):
        return 0


class ProgressBar:
    def __init__(self, total: int, out: BinaryIO) -> None:
        self.total = total
        self.current = 0
        self.out = out
        self.width = _terminal_width(out)
        self._started = time.monotonic()
        self._changed = self._started
        self._finished = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._started = self._changed = time.monotonic()
        self._draw(final=False)
        self._task = asyncio.get_running_loop().create_task(self._refresh())

    def add(self, n: int = 1) -> None:
        self.current += n
        self._changed = time.monotonic()

    async def _refresh(self) -> None:
        while not self._finished:
            await asyncio.sleep(REFRESH_SECONDS)
            if not self._finished:
                self._draw(final=False)

    def finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        if self._task is not None:
            self._task.cancel()
        self._draw(final=True)
        self.out.write(b"\n")
        self.out.flush()

    def line(self, final: bool, now: float) -> str:
        total, current = self.total, self.current
        percent = f" {current / (total / 100) if total else current / 100:6.2f}%"
        counters = f" {current} / {total} "
        elapsed = now - self._started
        time_box = ""
        if final:
            time_box = " " + format_duration(int(elapsed) * SECOND)
        elif current > 0:
            per_entry = (self._changed - self._started) / current
            left = (total - current) * per_entry - (now - self._changed)
            if int(left) > 0:
                time_box = " " + _time_left(left)
        bar = ""
        size = self.width - len(counters + "B!" + percent + time_box)
        if size > 0 and total > 0:
            filled = min(math.ceil(current / total * size), size)
            empty = max(size - filled, 0)
            if empty <= 0:
                bar = "o" * filled
            elif filled > 0:
                bar = "o" * (filled - 1) + "m"
            bar = "B" + bar + " " * empty + "!"
        text = counters + bar + percent + time_box
        return text + " " * max(self.width - len(text), 0)

    def _draw(self, final: bool) -> None:
        self.out.write(("\r" + self.line(final, time.monotonic())).encode())
        self.out.flush()
