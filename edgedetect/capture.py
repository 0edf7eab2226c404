"""The capture stage: a thread that reads a source into the latest-frame slot, and reopens
the source with capped exponential backoff when it fails."""

from __future__ import annotations

import logging
import threading
from typing import Callable

from edgedetect import clock
from edgedetect.errors import SourceError
from edgedetect.frames import Frame
from edgedetect.slot import LatestSlot
from edgedetect.sources import Source
from edgedetect.stats import PipelineStats

log = logging.getLogger("edgedetect.capture")

BACKOFF_START_S = 0.5
BACKOFF_MAX_S = 30.0


class CaptureThread:
    def __init__(self, make_source: Callable[[], Source], slot: LatestSlot[Frame], stats: PipelineStats,
                 source: Source | None = None):
        self._make_source = make_source
        self._source = source  # an already-open source, so start-up errors surface before threads run
        self._slot = slot
        self._stats = stats
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)
        self._index = 0
        self.last_frame_t = 0.0

    @property
    def state(self) -> str:
        return self._stats.source_state

    def _set_state(self, state: str) -> None:
        if self._stats.source_state != state:
            log.info("source %s: %s", self._stats.source_name or "?", state)
        self._stats.source_state = state

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        # Cut a pacing sleep short. The source itself is closed by the capture thread: closing a
        # VideoCapture while another thread is inside read() can crash OpenCV.
        interrupt = getattr(self._source, "interrupt", None)
        if interrupt is not None:
            interrupt()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _open(self) -> Source | None:
        delay = BACKOFF_START_S
        while not self._stop.is_set():
            try:
                src = self._make_source()
                src.open()
                return src
            except SourceError as e:
                self._set_state("reconnecting")
                log.warning("%s; retrying in %.1f s", e, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, BACKOFF_MAX_S)
        return None

    def _run(self) -> None:
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
            self._set_state("running")
            try:
                self._read_until_end(src)
            except SourceError as e:
                if self._stop.is_set():
                    return
                log.warning("%s", e)
                self._set_state("reconnecting")
                self._source = None
                src.close()
                self._stop.wait(BACKOFF_START_S)
                continue
            if self._stop.is_set():
                return
            # A finite source (file, images) that ended without --loop: keep serving the last frame.
            self._set_state("ended")
            self._stop.wait()

    def _read_until_end(self, src: Source) -> None:
        while not self._stop.is_set():
            cap = src.read()
            if cap is None:
                return
            t = clock.now()
            self.last_frame_t = t
            self._slot.put(Frame(self._index, t, cap.image, cap.lores))
            self._index += 1
            self._stats.captured(t)
