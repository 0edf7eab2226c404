"""The inference stage: takes the newest frame, runs the model, hands the result on.

Like rpicam-apps' TfStage, inference runs beside capture and frames that arrive while it is
busy are not queued: the slot keeps only the newest, so results are never stale.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

from edgedetect import clock
from edgedetect.frames import Frame, Result
from edgedetect.model import Classifier, DetectFilter, Detector
from edgedetect.slot import LatestSlot
from edgedetect.stats import PipelineStats

log = logging.getLogger("edgedetect.worker")


def infer(model: Detector | Classifier, frame: Frame, flt: DetectFilter, top_k: int) -> Result:
    """One frame through the model (also used by bench's single-threaded baseline)."""
    if frame.lores is not None:
        model.set_input(frame.lores, bgr=False)
    else:
        model.set_input(frame.image, bgr=True)
    t0 = clock.now()
    model.invoke()
    t1 = clock.now()
    result = Result(frame, inference_ms=(t1 - t0) * 1000.0)
    if isinstance(model, Detector):
        result.detections = model.detections(flt)
    else:
        result.classes = model.top(top_k, flt.threshold if flt.threshold < 1 else 0.0)
    result.t_done = clock.now()
    return result


class InferenceWorker:
    def __init__(self, model: Detector | Classifier, slot: LatestSlot[Frame], publish: Callable[[Result], None],
                 stats: PipelineStats, flt: DetectFilter, top_k: int = 3, max_failures: int = 10):
        self.model = model
        self._slot = slot
        self._publish = publish
        self._stats = stats
        self._flt = flt
        self._top_k = top_k
        self.max_failures = max_failures
        self.failed = threading.Event()  # set after max_failures in a row: the daemon exits
        self.last_result_t = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="inference", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        in_a_row = 0
        while not self._stop.is_set():
            frame = self._slot.take(timeout=0.2)
            if frame is None:
                continue
            try:
                result = infer(self.model, frame, self._flt, self._top_k)
            except Exception as e:  # noqa: BLE001 - any runtime failure skips the frame
                in_a_row += 1
                self._stats.inference_failed()
                if in_a_row == 1:
                    log.error("inference failed on frame %d: %s (skipping; further failures counted)",
                              frame.index, e)
                if in_a_row >= self.max_failures:
                    log.critical("inference failed %d times in a row; giving up", in_a_row)
                    self.failed.set()
                    return
                continue
            if in_a_row:
                log.warning("inference recovered after %d failed frames", in_a_row)
                in_a_row = 0
            self.last_result_t = result.t_done
            self._stats.inferred(result.t_done, result.inference_ms, len(result.detections))
            self._publish(result)
