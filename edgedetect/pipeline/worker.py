"""The inference stage: takes the newest frame, runs the model, hands the result on.

Like rpicam-apps' TfStage, inference runs beside capture and frames that arrive while it is
busy are not queued: the slot keeps only the newest, so results are never stale.

With a motion gate, a frame of a still scene is not inferred: it is published with the last
inferred frame's detections (a "held" result, inference_ms 0), so viewers keep seeing live
video with the boxes of the last inference, and the next frame that shows motion is inferred.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

from edgedetect import clock
from edgedetect.detect.model import DetectFilter, Model
from edgedetect.pipeline.frames import Frame, Result
from edgedetect.pipeline.motion import MotionGate
from edgedetect.pipeline.slot import LatestSlot
from edgedetect.pipeline.stage import StageThread
from edgedetect.pipeline.stats import PipelineStats

log = logging.getLogger("edgedetect.pipeline.worker")


def infer(model: Model, frame: Frame, flt: DetectFilter, top_k: int,
          before_invoke: Callable[[], None] | None = None) -> Result:
    """One frame through the model, as a result (`before_invoke`: see Model.detect)."""
    found = model.detect(frame, flt, top_k, before_invoke=before_invoke)
    return Result(frame, found.detections, found.classes, inference_ms=found.times.invoke_ms, t_done=clock.now())


def held(last: Result, frame: Frame) -> Result:
    """A new frame shown with an earlier inference's findings (shared: results are immutable)."""
    return Result(frame, last.detections, last.classes, inference_ms=0.0, t_done=clock.now(), held=True)


class InferenceWorker(StageThread):
    def __init__(self, model: Model, slot: LatestSlot[Frame], publish: Callable[[Result], None],
                 stats: PipelineStats, flt: DetectFilter, top_k: int = 3, max_failures: int = 10,
                 motion: MotionGate | None = None):
        super().__init__("inference")
        self.model = model
        self._slot = slot
        self._publish = publish
        self._stats = stats
        self._flt = flt
        self._top_k = top_k
        self.max_failures = max_failures
        self.motion = motion
        if motion is not None:
            stats.extra["motion"] = motion.figures
        self.failed = threading.Event()  # set after max_failures in a row: the daemon exits
        self.last_result_t = 0.0
        self._last: Result | None = None  # newest inferred result, held on still frames
        self._waiting: Result | None = None  # inferred, published once the next frame is in the input tensor

    def set_filter(self, flt: DetectFilter, top_k: int) -> None:
        """A new filter from a config reload; the next inference uses it (one reference each, swapped whole)."""
        self._flt, self._top_k = flt, top_k

    def _gate_skips(self, frame: Frame) -> bool:
        gate = self.motion
        return gate is not None and not gate.should_infer(frame, clock.now()) and self._last is not None

    def _publish_held(self, frame: Frame) -> None:
        assert self._last is not None
        result = held(self._last, frame)
        self.last_result_t = result.t_done
        self._stats.skipped_frame(result.t_done)
        self._publish(result)

    def _publish_waiting(self) -> None:
        result, self._waiting = self._waiting, None
        if result is not None:
            self._publish(result)

    def _run(self) -> None:
        in_a_row = 0
        frame: Frame | None = None  # the next frame to infer, already past the gate
        while not self._stop.is_set():
            if frame is None:
                frame = self._slot.take(timeout=0.2)
                if frame is None:
                    continue
                if self._gate_skips(frame):
                    self._publish_held(frame)
                    frame = None
                    continue
            try:
                result = infer(self.model, frame, self._flt, self._top_k, self._publish_waiting)
            except Exception as e:  # noqa: BLE001 - any runtime failure skips the frame
                self._publish_waiting()
                in_a_row += 1
                self._stats.inference_failed()
                if in_a_row == 1:
                    log.error("inference failed on frame %d: %s (skipping; further failures counted)",
                              frame.index, e)
                frame = None
                if in_a_row >= self.max_failures:
                    log.critical("inference failed %d times in a row; giving up", in_a_row)
                    self.failed.set()
                    return
                continue
            if in_a_row:
                log.warning("inference recovered after %d failed frames", in_a_row)
                in_a_row = 0
            if self.motion is not None:
                self.motion.inferred(result.t_done)
            self._last = result
            self.last_result_t = result.t_done
            self._stats.inferred(result.t_done, result.inference_ms)
            # When a frame is already waiting, this result is published from that frame's detect
            # call, once its pixels are in the input tensor (before_invoke): preprocessing then
            # never waits for the GIL behind the viewers and the capture thread that the result
            # wakes, which cost 1-4 ms a frame on a busy 2-core machine. It delays the result by
            # the preprocessing alone (about 0.3 ms), and only when frames queue up.
            frame = self._slot.take(timeout=0)
            if frame is not None and not self._gate_skips(frame):
                self._waiting = result
                continue
            self._publish(result)
            if frame is not None:
                self._publish_held(frame)
                frame = None
        self._publish_waiting()  # stopped while a result waited for the next frame's preprocessing
