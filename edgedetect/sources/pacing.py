"""Playing recorded media at its own rate."""

from __future__ import annotations

import threading

from edgedetect import clock


class Pacer:
    """Sleeps so that frame n is released at start + n / fps; a late frame is released at once
    and the schedule restarts from it, so a stall is never followed by a burst."""

    def __init__(self, fps: float | None, stop: threading.Event | None = None):
        self.period = 1.0 / fps if fps and fps > 0 else 0.0
        self._next = 0.0
        self._stop = stop or threading.Event()

    def wait(self) -> None:
        if not self.period:
            return
        t = clock.now()
        if self._next == 0.0 or t - self._next > self.period:
            self._next = t
        else:
            self._stop.wait(max(0.0, self._next - t))
        self._next += self.period

    def interrupt(self) -> None:
        self._stop.set()
