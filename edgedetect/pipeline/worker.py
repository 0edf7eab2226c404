"""The inference stage: one thread, one model, every camera. The scheduler hands it the newest
frame of the camera whose turn it is; it runs the model and publishes the result to that
camera's publisher.

Like rpicam-apps' TfStage, inference runs beside capture and frames that arrive while it is
busy are not queued: each camera's slot keeps only its newest, so results are never stale.

With a motion gate, a frame of a still scene is not inferred: it is published with the camera's
last inferred frame's detections (a "held" result, inference_ms 0), so viewers keep seeing live
video with the boxes of the last inference, and the next frame that shows motion is inferred.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

from edgedetect import clock
from edgedetect.detect.model import DetectFilter, Model
from edgedetect.pipeline.camera import Camera
from edgedetect.frames import Frame, Result
from edgedetect.pipeline.scheduler import Scheduler
from edgedetect.pipeline.stage import StageThread
from edgedetect.pipeline.stats import DetectorStats

log = logging.getLogger("edgedetect.pipeline.worker")


def infer(model: Model, frame: Frame, flt: DetectFilter, top_k: int,
          before_invoke: Callable[[], None] | None = None) -> Result:
    """One frame through the model, as a result (`before_invoke`: see Model.detect)."""
    found = model.detect(frame, flt, top_k, before_invoke=before_invoke)
    return Result(frame, found.detections, found.classes, inference_ms=found.times.invoke_ms, t_done=clock.now(),
                  weak=found.weak)


def held(last: Result, frame: Frame) -> Result:
    """A new frame shown with an earlier inference's findings (shared: results are immutable)."""
    return Result(frame, last.detections, last.classes, inference_ms=0.0, t_done=clock.now(), held=True)


class InferenceWorker(StageThread):
    def __init__(self, model: Model, scheduler: Scheduler[Camera], stats: DetectorStats, flt: DetectFilter,
                 top_k: int = 3, max_failures: int = 10):
        super().__init__("inference")
        self.model = model
        self._scheduler = scheduler
        self._stats = stats
        self._flt = flt
        self._top_k = top_k
        self.max_failures = max_failures
        self.failed = threading.Event()  # set after max_failures in a row: the daemon exits
        self.last_result_t = 0.0
        self._waiting: tuple[Camera, Result] | None = None  # published once the next frame is in the input tensor

    def set_filter(self, flt: DetectFilter, top_k: int) -> None:
        """A new filter from a config reload; the next inference uses it (one reference each, swapped whole)."""
        self._flt, self._top_k = flt, top_k

    def _gate_skips(self, cam: Camera, frame: Frame) -> bool:
        gate = cam.motion
        return gate is not None and not gate.should_infer(frame, clock.now()) and cam.last is not None

    def _publish(self, cam: Camera, result: Result) -> None:
        cam.last_result_t = self.last_result_t = result.t_done
        cam.publisher.publish(result)

    def _publish_held(self, cam: Camera, frame: Frame) -> None:
        assert cam.last is not None
        result = held(cam.last, frame)
        cam.stats.skipped_frame(result.t_done)
        self._publish(cam, result)

    def _publish_waiting(self) -> None:
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            self._publish(*waiting)

    def _next(self, timeout: float) -> tuple[Camera, Frame] | None:
        """The next frame to infer, past its camera's gate (held results published on the way)."""
        while not self._stop.is_set():
            got = self._scheduler.next(timeout)
            if got is None:
                return None
            cam, frame = got
            if not self._gate_skips(cam, frame):
                return got
            self._publish_waiting()
            self._publish_held(cam, frame)
            timeout = 0.0
        return None

    def _run(self) -> None:
        in_a_row = 0
        nxt: tuple[Camera, Frame] | None = None
        while not self._stop.is_set():
            if nxt is None:
                nxt = self._next(0.2)
                if nxt is None:
                    continue
            cam, frame = nxt
            nxt = None
            try:
                result = infer(self.model, frame, cam.flt or self._flt, self._top_k, self._publish_waiting)
            except Exception as e:  # noqa: BLE001 - any runtime failure skips the frame
                self._publish_waiting()
                in_a_row += 1
                self._stats.inference_failed()
                if in_a_row == 1:
                    log.error("inference failed on frame %d of %s: %s (skipping; further failures counted)",
                              frame.index, cam.name, e)
                if in_a_row >= self.max_failures:
                    log.critical("inference failed %d times in a row; giving up", in_a_row)
                    self.failed.set()
                    return
                continue
            if in_a_row:
                log.warning("inference recovered after %d failed frames", in_a_row)
                in_a_row = 0
            if cam.motion is not None:
                cam.motion.inferred(result.t_done)
            cam.last = result
            self._stats.inferred(result.t_done, result.inference_ms)
            cam.stats.inferred(result.t_done)
            # When a frame is already waiting, this result is published from that frame's detect
            # call, once its pixels are in the input tensor (before_invoke): preprocessing then
            # never waits for the GIL behind the viewers and the capture thread that the result
            # wakes, which cost 1-4 ms a frame on a busy 2-core machine. It delays the result by
            # the preprocessing alone (about 0.3 ms), and only when frames queue up.
            self._waiting = (cam, result)
            nxt = self._next(0.0)
            if nxt is None:
                self._publish_waiting()
        self._publish_waiting()  # stopped while a result waited for the next frame's preprocessing
