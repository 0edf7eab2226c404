"""Which camera the one detector serves next.

Of the cameras that have a new frame and whose `fps` cap lets one through now, the one that was
served longest ago goes first, with its newest frame. With N cameras that all deliver faster than
the detector, each gets 1/N of the inferences and a frame waits at most N - 1 other inferences;
a camera with a cap, or with nothing new, leaves its turn to the others. Only the inference
thread takes frames, so each camera has at most one frame in flight.
"""

from __future__ import annotations

import threading
from typing import Generic, Protocol, TypeVar

from edgedetect import clock
from edgedetect.frames import Frame
from edgedetect.pipeline.slot import LatestSlot


class Lane(Protocol):
    slot: LatestSlot[Frame]
    min_interval_s: float  # 1 / fps cap; 0: no cap
    served_t: float  # clock.now() when its last frame was taken (0: never)


L = TypeVar("L", bound=Lane)


class Scheduler(Generic[L]):
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._lanes: list[L] = []
        self._closed = False

    def add(self, lane: L) -> None:
        with self._cond:
            self._lanes.append(lane)

    def arrived(self) -> None:
        """A lane's slot has a new frame (called by the slot, on the capture thread)."""
        with self._cond:
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def next(self, timeout: float) -> tuple[L, Frame] | None:
        """The lane to serve and its newest frame, waiting up to `timeout`; None on timeout or close."""
        deadline = clock.now() + timeout
        with self._cond:
            while not self._closed:
                now = clock.now()
                ready, soonest = None, deadline
                for lane in self._lanes:
                    if not lane.slot.full:
                        continue
                    due = lane.served_t + lane.min_interval_s if lane.served_t else 0.0
                    if due > now:
                        soonest = min(soonest, due)
                    elif ready is None or lane.served_t < ready.served_t:
                        ready = lane
                if ready is not None:
                    frame = ready.slot.take(timeout=0)
                    if frame is not None:
                        ready.served_t = now
                        return ready, frame
                    continue
                if now >= deadline:
                    return None
                self._cond.wait(max(0.0, soonest - now))
        return None
