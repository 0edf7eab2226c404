"""Which camera the one detector serves next.

Of the cameras that have a new frame and whose `fps` cap lets one through now, the one that was
served longest ago goes first, with its newest frame. With N cameras that all deliver faster than
the detector, each gets 1/N of the inferences and a frame waits at most N - 1 other inferences;
a camera with a cap, or with nothing new, leaves its turn to the others. Only the inference
thread takes frames, so each camera has at most one frame in flight.

A camera whose detection is switched off takes no turn: each of its frames is passed through
(published uninferred, on the inference thread, outside the lock) as it comes, whatever its cap.
The worker publishes a result only once it holds the next frame, so the camera handed out by
the previous call is not passed through until the call after: its frames stay in order.
"""

from __future__ import annotations

import threading
from typing import Callable, Generic, Protocol, TypeVar

from edgedetect import clock
from edgedetect.frames import Frame
from edgedetect.pipeline.slot import LatestSlot


class Lane(Protocol):
    slot: LatestSlot[Frame]
    min_interval_s: float  # 1 / fps cap; 0: no cap
    served_t: float  # clock.now() when its last frame was taken (0: never)


L = TypeVar("L", bound=Lane)


def _detecting(lane: Lane) -> bool:
    return True


def _no_pass(lane: Lane, frame: Frame) -> None:
    raise AssertionError("every lane detects")


class Scheduler(Generic[L]):
    """`detecting(lane)`: whether the lane's frames go to the detector; `pass_through(lane,
    frame)` publishes a frame of one that does not (both on the inference thread)."""

    def __init__(self, detecting: Callable[[L], bool] = _detecting,
                 pass_through: Callable[[L, Frame], None] = _no_pass) -> None:
        self._detecting = detecting
        self._pass_through = pass_through
        self._cond = threading.Condition()
        self._lanes: list[L] = []
        self._closed = False
        self._handed: L | None = None  # the lane whose frame the last call handed to the detector

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
        """The lane to serve and its newest frame, waiting up to `timeout`; None on timeout or close.
        Frames of lanes not detecting are passed through on the way."""
        deadline = clock.now() + timeout
        with self._cond:
            in_flight, self._handed = self._handed, None
        while True:
            passing: list[tuple[L, Frame]] = []
            with self._cond:
                got = self._pick(deadline, in_flight, passing)
            if not passing:
                return got
            for lane, frame in passing:
                self._pass_through(lane, frame)

    def _pick(self, deadline: float, in_flight: L | None, passing: list[tuple[L, Frame]]) -> tuple[L, Frame] | None:
        """Under the lock: the lane to serve and its frame, or None with `passing` filled (the
        caller passes those through outside the lock, then asks again), on timeout or on close."""
        while not self._closed:
            now = clock.now()
            ready, soonest = None, deadline
            for lane in self._lanes:
                if not lane.slot.full:
                    continue
                if not self._detecting(lane):
                    if lane is not in_flight and (frame := lane.slot.take(timeout=0)) is not None:
                        passing.append((lane, frame))
                    continue
                due = lane.served_t + lane.min_interval_s if lane.served_t else 0.0
                if due > now:
                    soonest = min(soonest, due)
                elif ready is None or lane.served_t < ready.served_t:
                    ready = lane
            if passing:
                return None
            if ready is not None:
                frame = ready.slot.take(timeout=0)
                if frame is not None:
                    ready.served_t = now
                    self._handed = ready
                    return ready, frame
                continue
            if now >= deadline:
                return None
            self._cond.wait(max(0.0, soonest - now))
        return None
