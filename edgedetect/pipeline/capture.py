"""The capture stage: a thread that reads a source into the latest-frame slot, and reopens
the source with capped exponential backoff when it fails. A source that keeps failing (a camera
that drops every connection after a frame) is logged in full once, then summarised once a
period, and once more when it has run for a while again."""

from __future__ import annotations

import logging
from typing import Callable

from edgedetect import clock
from edgedetect.errors import SourceError
from edgedetect.frames import Frame
from edgedetect.pipeline.slot import LatestSlot
from edgedetect.pipeline.stage import StageThread
from edgedetect.pipeline.state import SourceState
from edgedetect.pipeline.stats import CameraStats
from edgedetect.sources import Source
from edgedetect.system.logs import RepeatedFailures

log = logging.getLogger("edgedetect.pipeline.capture")

BACKOFF_START_S = 0.5
BACKOFF_MAX_S = 30.0
PREDECESSOR_WAIT_S = 2.0  # how long a replacement thread waits for the abandoned one to let go
FAILURE_PERIOD_S = 60.0  # a source that keeps failing: one summary line at most this often
RECOVERED_AFTER_S = 10.0  # frames for this long end a run of failures (one frame each time does not)


class CaptureThread(StageThread):
    def __init__(self, make_source: Callable[[], Source], slot: LatestSlot[Frame], stats: CameraStats,
                 source: Source | None = None, on_frame: Callable[[Frame], None] | None = None,
                 predecessor: CaptureThread | None = None, camera: str = "",
                 failure_period_s: float = FAILURE_PERIOD_S, recovered_after_s: float = RECOVERED_AFTER_S):
        super().__init__(f"capture {camera}" if camera else "capture")
        self.camera = camera  # the name every frame carries
        # An abandoned thread this one replaces: it closes its source once its capture returns
        # (interrupt() makes a camera's return at once); wait for that before opening, since
        # a camera can be open only once.
        self._predecessor = predecessor
        self._reopen = predecessor is not None  # the next open brings a failed source back
        self._on_frame = on_frame  # every captured frame, inferred or not (a recorder's pre-roll)
        self._make_source = make_source
        self._source = source  # an already-open source, so start-up errors surface before threads run
        self._slot = slot
        self._stats = stats
        self._index = 0
        self._media_t: float | None = None  # an unpaced file's t_media of the latest frame
        self.started_t = 0.0
        self.last_frame_t = 0.0
        self._progress_t = 0.0  # last sign of life: start, an open attempt, a frame
        self._waiting_s = 0.0  # a backoff the thread is sleeping through on purpose
        self._delay = BACKOFF_START_S  # grows with each failure, back to the start with a frame
        self._failures = RepeatedFailures(log, f"source {stats.source.name or '?'}", failure_period_s,
                                          recovered_after_s)
        self._warned: set[str] = getattr(source, "warned", set())  # a source's say-once warnings, kept across reopens
        if source is not None:
            self._attach(source)

    def _set_state(self, state: SourceState) -> None:
        if self._stop.is_set():
            return  # stopped or abandoned: the state belongs to whoever replaced this thread
        # Within a run of failures, the moves back and forth are covered by its summary lines.
        self._stats.source.move(state, quiet=self._failures.failing)

    def start(self) -> None:
        self.started_t = self._progress_t = clock.now()
        super().start()

    @property
    def source(self) -> Source | None:
        """The source open now: a reopen after a fault replaces it; None while none is open."""
        return self._source

    @property
    def idle_s(self) -> float:
        """Seconds without a sign of life, not counting a deliberate backoff sleep."""
        return clock.now() - self._progress_t - self._waiting_s

    def abandon(self) -> None:
        """Give up on a thread stuck in a capture call that never returns (a hung driver or
        stream). It is told to stop; if the call ever returns, it exits without publishing."""
        self.stop()

    def stop(self) -> None:
        super().stop()
        # Cut a pacing sleep short. The source itself is closed by the capture thread: closing a
        # VideoCapture while another thread is inside read() can crash OpenCV.
        interrupt = getattr(self._source, "interrupt", None)
        if interrupt is not None:
            interrupt()

    def _attach(self, src: Source) -> None:
        if hasattr(src, "on_restart"):  # a camera that restarts itself in place tells us
            src.on_restart = self._camera_restarted  # type: ignore[attr-defined]

    def _camera_restarted(self, how: str) -> None:
        if self._stop.is_set():
            return
        self._progress_t = clock.now()  # a restart is a sign of life, like an open attempt
        self._stats.camera_restarted(how)

    def _backoff(self, reason: SourceError) -> None:
        self._set_state(SourceState.RECONNECTING)
        delay = self._delay
        self._failures.failed(str(reason), f"; retrying in {delay:.1f} s")
        self._waiting_s = delay
        self._stop.wait(delay)
        self._progress_t, self._waiting_s = clock.now(), 0.0
        self._delay = min(delay * 2, BACKOFF_MAX_S)

    def _open(self) -> Source | None:
        while not self._stop.is_set():
            self._progress_t = clock.now()
            try:
                src = self._make_source()
                if hasattr(src, "warned"):
                    src.warned = self._warned  # type: ignore[attr-defined]
                src.open()
                self._attach(src)
                if self._reopen and hasattr(src, "on_restart"):
                    self._camera_restarted("reopen")
                self._reopen = False
                return src
            except SourceError as e:
                self._backoff(e)
        return None

    def _run(self) -> None:
        before, self._predecessor = self._predecessor, None
        if before is not None:
            self._waiting_s = PREDECESSOR_WAIT_S
            before.join(PREDECESSOR_WAIT_S)
            self._progress_t, self._waiting_s = clock.now(), 0.0
            if before._thread.is_alive():
                log.warning("the abandoned capture thread still holds its source; opening anyway")
        try:
            self._loop()
        finally:
            if self._source is not None:
                self._source.close()
                self._source = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            if self._source is None:
                self._source = self._open()
                if self._source is None:
                    return
            src = self._source
            self._set_state(SourceState.RUNNING)
            try:
                self._read_until_end(src)
            except SourceError as e:
                self._source = None
                self._reopen = True
                src.close()
                if self._stop.is_set():
                    return
                self._backoff(e)
                continue
            if self._stop.is_set():
                return
            # A finite source (file, images) that ended without --loop: keep serving the last frame.
            self._set_state(SourceState.ENDED)
            self._waiting_s = float("inf")
            self._stop.wait()

    def _read_until_end(self, src: Source) -> None:
        # An unpaced file has no clock of its own: decode the next frame only once the previous
        # one was taken, instead of decoding hundreds a second only to drop them.
        pull = not src.live and getattr(src, "pace", True) is False
        period = 1.0 / src.fps if pull and src.fps else None
        if hasattr(src, "on_corrupt"):  # a stream that skips undecodable frames counts them here
            src.on_corrupt = self._stats.corrupt_frame  # type: ignore[attr-defined]
        while not self._stop.is_set():
            if pull and not self._slot.wait_empty(0.5):
                self._progress_t = clock.now()  # waiting on a busy consumer is not a stall
                continue
            cap = src.read()
            if cap is None or self._stop.is_set():
                return
            t = clock.now()
            self.last_frame_t = self._progress_t = t
            self._delay = BACKOFF_START_S
            self._failures.succeeded()
            if period is not None:
                self._media_t = t if self._media_t is None else self._media_t + period
            frame = Frame(self._index, t, cap.image, cap.lores, self.camera, self._media_t if period else None,
                          cap.packets)
            self._slot.put(frame)
            if self._on_frame is not None:
                self._on_frame(frame)
            self._index += 1
            self._stats.captured(t)
            if cap.packets_dropped:
                self._stats.packets_lost(cap.packets_dropped)
