"""The pipeline as one unit: source -> latest-frame slot -> inference -> publisher, with its
figures and its stats reporter. The daemon, bench and the tests all build it here; nothing
else wires these stages, and nothing in it is global, so two pipelines in one process share
no state (several cameras may share one model file, each with its own Pipeline).

    capture thread ──▶ LatestSlot ──▶ inference thread ──▶ Publisher ──▶ result listeners
         └──▶ frame listeners (every captured frame)          └──▶ viewers (JPEG on demand)
    stats thread: a snapshot every interval to the report sinks
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Callable

from edgedetect import clock
from edgedetect.detect.model import DetectFilter, Model
from edgedetect.pipeline.capture import CaptureThread
from edgedetect.pipeline.frames import Frame, Result
from edgedetect.pipeline.health import Progress, progress
from edgedetect.pipeline.listeners import Listeners
from edgedetect.pipeline.motion import MotionGate
from edgedetect.pipeline.publish import Publisher
from edgedetect.pipeline.report import Sink, StatsReporter, log_sink
from edgedetect.pipeline.slot import LatestSlot
from edgedetect.pipeline.state import SourceState
from edgedetect.pipeline.stats import PipelineStats
from edgedetect.pipeline.worker import InferenceWorker
from edgedetect.sources import Source

log = logging.getLogger("edgedetect.pipeline")

MAX_SOURCE_RESTARTS = 3  # stall restarts without a frame before the source counts as failed


@dataclass(frozen=True, slots=True)
class PipelineOptions:
    flt: DetectFilter = DetectFilter()
    top_k: int = 3
    max_failures: int = 10
    jpeg_quality: int = 80
    stats_window: int = 120
    stats_interval: float = 10.0
    sysfs_root: str = "/sys"
    procfs_root: str = "/proc"
    stall_timeout: float = 10.0
    report_sinks: tuple[Sink, ...] = (log_sink,)


class Pipeline:
    def __init__(self, model: Model, make_source: Callable[[], Source], opts: PipelineOptions = PipelineOptions(),
                 source: Source | None = None, motion: MotionGate | None = None):
        self.model = model
        self.opts = opts
        self._make_source = make_source
        self.slot: LatestSlot[Frame] = LatestSlot()
        self.stats = PipelineStats(opts.stats_window, opts.sysfs_root, dropped=lambda: self.slot.dropped,
                                   procfs_root=opts.procfs_root)
        self.stats.source.name = source.name if source is not None else ""
        self.publisher = Publisher(self.stats, opts.jpeg_quality, banner=self.stats.banner)
        self.frames: Listeners[Frame] = Listeners("frame listener")
        self.first_result = threading.Event()
        self.publisher.add_listener(lambda r: self.first_result.set())
        self.reporter = StatsReporter(self.stats, opts.stats_interval, list(opts.report_sinks))
        self.worker = InferenceWorker(model, self.slot, self.publisher.publish, self.stats, opts.flt, opts.top_k,
                                      opts.max_failures, motion=motion)
        self.capture = CaptureThread(make_source, self.slot, self.stats, source=source, on_frame=self.frames)
        self.source_restarts = 0

    def add_result_listener(self, fn: Callable[[Result], None]) -> None:
        """Called on the inference thread with every published result; must return at once."""
        self.publisher.add_listener(fn)

    def add_frame_listener(self, fn: Callable[[Frame], None]) -> None:
        """Called on the capture thread with every captured frame; must return at once."""
        self.frames.add(fn)

    def start(self) -> None:
        self.worker.start()
        self.capture.start()
        self.reporter.start()

    def stop(self) -> None:
        """Tell every stage to stop (returns at once; join waits)."""
        self.capture.stop()
        self.worker.stop()
        self.reporter.stop()
        self.slot.close()
        self.publisher.close()

    def join(self, timeout: float = 1.5) -> None:
        deadline = clock.now() + timeout
        for part in (self.capture, self.worker, self.reporter):
            part.join(max(0.05, deadline - clock.now()))

    # --- supervision (called periodically from the daemon's main loop) ----------------------

    def progress(self, now: float | None = None) -> Progress:
        return progress(self.first_result.is_set(), self.stats.source_state, self.worker.last_result_t,
                        self.capture.idle_s, clock.now() if now is None else now, self.opts.stall_timeout)

    def check_source_stall(self) -> None:
        """A capture call that hangs (driver, network) never raises: notice the silence and
        restart the source in a new thread; after a few fruitless restarts, report failure."""
        cap = self.capture
        if self.stats.source_state not in (SourceState.RUNNING, SourceState.RECONNECTING):
            return
        if cap.last_frame_t > cap.started_t:
            self.source_restarts = 0
        if cap.idle_s <= self.opts.stall_timeout:
            return
        self.source_restarts += 1
        if self.source_restarts > MAX_SOURCE_RESTARTS:
            log.error("source %s: no frame after %d restarts; giving up (systemd's watchdog restarts the service)",
                      self.stats.source_name, MAX_SOURCE_RESTARTS)
            cap.abandon()
            self.stats.source.move(SourceState.FAILED)
            return
        log.warning("source %s: no frame for %.0f s; restarting it (%d/%d)", self.stats.source_name,
                    cap.idle_s, self.source_restarts, MAX_SOURCE_RESTARTS)
        cap.abandon()
        self.stats.source.move(SourceState.RECONNECTING)
        self.capture = CaptureThread(self._make_source, self.slot, self.stats, on_frame=self.frames, predecessor=cap)
        self.capture.start()

    def show_no_signal(self) -> None:
        """While the source is away, viewers see a card instead of the last frame frozen."""
        if self.stats.source_state in (SourceState.RECONNECTING, SourceState.FAILED) and not self.publisher.placeholder:
            self.publisher.publish_placeholder(f"no signal: {self.stats.source_state}")
