"""A one-line progress bar on stderr, drawn only when stderr is a terminal (a service's journal
or a test's pipe gets nothing), redrawn at most a few times a second."""

from __future__ import annotations

import sys
from typing import TextIO

from edgedetect import clock

WIDTH = 30
REDRAW_S = 0.2


class ProgressBar:
    def __init__(self, stream: TextIO | None = None, enabled: bool | None = None):
        self.stream = stream or sys.stderr  # looked up now: tests and tools replace sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self._t0 = clock.now()
        self._drawn_t = -1.0
        self._drawn = False

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled or total <= 0:
            return
        t = clock.now()
        if done < total and t - self._drawn_t < REDRAW_S:
            return
        self._drawn_t = t
        filled = WIDTH * done // total
        rate = done / (t - self._t0) if t > self._t0 and done else 0.0
        left = f", {int((total - done) / rate) // 60}:{int((total - done) / rate) % 60:02d} left" if rate else ""
        self.stream.write(f"\r[{'#' * filled}{'.' * (WIDTH - filled)}] {done}/{total} pictures, "
                          f"{rate:.1f}/s{left}   ")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\r" + " " * (WIDTH + 60) + "\r")
            self.stream.flush()
            self._drawn = False
