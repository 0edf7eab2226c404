"""One camera's side of the pipeline: its capture thread, its latest-frame slot, its publisher
(the stream, snapshot and results of this camera), its figures, its motion gate and its `fps`
cap. The inference thread is shared by every camera (see scheduler.py and worker.py).

A camera that fails is its own problem: its capture thread reconnects with backoff, a capture
call that hangs is abandoned and restarted, and meanwhile the other cameras go on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

from edgedetect import clock
from edgedetect.detect.model import DetectFilter
from edgedetect.pipeline.capture import CaptureThread
from edgedetect.frames import Frame, Result
from edgedetect.pipeline.health import Progress, progress
from edgedetect.pipeline.listeners import Listeners
from edgedetect.pipeline.motion import MotionGate
from edgedetect.pipeline.publish import Publisher
from edgedetect.pipeline.slot import LatestSlot
from edgedetect.pipeline.state import SourceState
from edgedetect.pipeline.stats import CameraStats
from edgedetect.sources import Source

log = logging.getLogger("edgedetect.pipeline")

MAX_SOURCE_RESTARTS = 3  # stall restarts without a frame before the source counts as failed


@dataclass(frozen=True)
class CameraSpec:
    """What the builder needs to know of a camera."""

    name: str
    make_source: Callable[[], Source]
    source: Source | None = None  # already open: start-up errors surface before threads run
    motion: MotionGate | None = None
    fps: float = 0.0  # the most inferences a second (0: as many as it gets)
    flt: DetectFilter | None = None  # its own filter ([cameras.NAME.detect]); None: the pipeline's


class Camera:
    def __init__(self, spec: CameraSpec, on_frame_ready: Callable[[], None], banner: Callable[[], str],
                 window: int = 120, jpeg_quality: int = 80, stall_timeout: float = 10.0):
        self.name = spec.name
        self._make_source = spec.make_source
        self.slot: LatestSlot[Frame] = LatestSlot(on_put=on_frame_ready)
        self.stats = CameraStats(spec.name, window, dropped=lambda: self.slot.dropped)
        self.stats.source.name = spec.source.name if spec.source is not None else ""
        self.publisher = Publisher(self.stats, jpeg_quality, banner=banner)
        self.frames: Listeners[Frame] = Listeners("frame listener")
        self.motion = spec.motion
        self.min_interval_s = 1.0 / spec.fps if spec.fps > 0 else 0.0
        self.flt = spec.flt
        self.served_t = 0.0  # set by the scheduler when it takes a frame
        self.last: Result | None = None  # newest inferred result, held on still frames
        self.last_result_t = 0.0
        self.stall_timeout = stall_timeout
        self.capture = CaptureThread(self._make_source, self.slot, self.stats, source=spec.source,
                                     on_frame=self.frames, camera=spec.name)
        self.source_restarts = 0

    def start(self) -> None:
        self.capture.start()

    def stop(self) -> None:
        self.capture.stop()
        self.slot.close()
        self.publisher.close()

    def join(self, timeout: float) -> None:
        self.capture.join(timeout)

    def progress(self, now: float | None = None) -> Progress:
        """This camera's health (its page's /healthz): the daemon's rule, on its own figures."""
        return progress(self.last_result_t > 0, self.stats.source_state, self.last_result_t,
                        self.capture.idle_s, clock.now() if now is None else now, self.stall_timeout)

    def check_stall(self) -> None:
        """A capture call that hangs (driver, network) never raises: notice the silence and
        restart the source in a new thread; after a few fruitless restarts, report failure."""
        cap = self.capture
        state = self.stats.source_state
        if state not in (SourceState.RUNNING, SourceState.RECONNECTING):
            return
        if cap.last_frame_t > cap.started_t:
            self.source_restarts = 0
        if cap.idle_s <= self.stall_timeout:
            return
        self.source_restarts += 1
        name = self.stats.source_name
        if self.source_restarts > MAX_SOURCE_RESTARTS:
            log.error("source %s: no frame after %d restarts; giving up", name, MAX_SOURCE_RESTARTS)
            cap.abandon()
            self.stats.source.move(SourceState.FAILED)
            return
        log.warning("source %s: no frame for %.0f s; restarting it (%d/%d)", name, cap.idle_s,
                    self.source_restarts, MAX_SOURCE_RESTARTS)
        cap.abandon()
        self.stats.source.move(SourceState.RECONNECTING)
        self.capture = CaptureThread(self._make_source, self.slot, self.stats, on_frame=self.frames,
                                     predecessor=cap, camera=self.name)
        self.capture.start()

    def show_no_signal(self) -> None:
        """While the source is away, viewers see a card instead of the last frame frozen."""
        state = self.stats.source_state
        if state in (SourceState.RECONNECTING, SourceState.FAILED) and not self.publisher.placeholder:
            self.publisher.publish_placeholder(f"no signal: {state}")
