"""One camera's side of the pipeline: its capture thread, its latest-frame slot, its publisher
(the stream, snapshot and results of this camera), its figures, its motion gate and its `fps`
cap. The inference thread is shared by every camera (see scheduler.py and worker.py).

A camera that fails is its own problem: its capture thread reconnects with backoff, a capture
call that hangs is abandoned and restarted, and meanwhile the other cameras go on.

The camera's `detect` and `motion` switches (edgedetect/switches.py) are read per frame: with
`detect` OFF its frames pass the detector by (published with no detections, so viewers stay live
and its objects end) and cost no inference; with `motion` OFF its gate lets every frame through.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

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

if TYPE_CHECKING:
    from edgedetect.switches import Switches

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


class SwitchedGate:
    """A camera's motion gate under its `motion` switch. OFF: every frame is inferred and the gate
    does no work (its reference stays the last frame it decided on). Back ON: it gates again."""

    def __init__(self, gate: MotionGate, switched_on: Callable[[], bool]):
        self.gate = gate
        self._switched_on = switched_on
        self._consulted = False  # whether the frame being decided on went through the gate

    def should_infer(self, frame: Frame, t: float) -> bool:
        self._consulted = self._switched_on()
        return self.gate.should_infer(frame, t) if self._consulted else True

    def inferred(self, t: float) -> None:
        if self._consulted:
            self.gate.inferred(t)

    def figures(self) -> dict[str, Any]:
        return {**self.gate.figures(), "enabled": self._switched_on()}


class Camera:
    def __init__(self, spec: CameraSpec, on_frame_ready: Callable[[], None], banner: Callable[[], str],
                 window: int = 120, jpeg_quality: int = 80, stall_timeout: float = 10.0,
                 switches: Switches | None = None):
        self.name = spec.name
        self._switches = switches
        self._make_source = spec.make_source
        self.slot: LatestSlot[Frame] = LatestSlot(on_put=on_frame_ready)
        self.stats = CameraStats(spec.name, window, dropped=lambda: self.slot.dropped)
        self.stats.source.name = spec.source.name if spec.source is not None else ""
        self.publisher = Publisher(self.stats, jpeg_quality, banner=banner)
        self.frames: Listeners[Frame] = Listeners("frame listener")
        self.motion: MotionGate | SwitchedGate | None = spec.motion
        if spec.motion is not None and switches is not None:
            self.motion = SwitchedGate(spec.motion, lambda: switches.on(spec.name, "motion"))
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

    def detecting(self) -> bool:
        """Whether its frames go to the detector (its `detect` switch)."""
        return self._switches is None or self._switches.on(self.name, "detect")

    def pass_through(self, frame: Frame) -> None:
        """A frame of a camera whose detection is off, published without inference (inference
        thread): no detections, so viewers see live video without boxes and its objects end."""
        self.last = None  # back ON, the first frame is inferred whatever the motion gate says
        t = clock.now()
        self.stats.skipped_frame(t)
        self.last_result_t = t
        self.publisher.publish(Result(frame, inference_ms=0.0, t_done=t))

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
