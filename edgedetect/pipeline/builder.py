"""The pipeline as one unit: one detector serving one or more cameras, with its figures and its
stats reporter. The daemon, bench and the tests all build it here; nothing else wires these
stages, and nothing in it is global, so two pipelines in one process share no state.

    camera A: capture thread ──▶ LatestSlot ─┐                        ┌─▶ A's publisher ──▶ listeners, viewers
    camera B: capture thread ──▶ LatestSlot ─┼─▶ scheduler ──▶ inference thread (one model)
          └──▶ frame listeners (every frame) ┘                        └─▶ B's publisher ──▶ ...
    stats thread: a snapshot every interval to the report sinks
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

from edgedetect import clock
from edgedetect.detect.model import DetectFilter, Model
from edgedetect.pipeline.camera import Camera, CameraSpec
from edgedetect.frames import Frame, Result
from edgedetect.pipeline.health import Progress, detector_progress
from edgedetect.pipeline.report import Sink, StatsReporter
from edgedetect.pipeline.scheduler import Scheduler
from edgedetect.pipeline.stats import DetectorStats, Figures
from edgedetect.pipeline.worker import InferenceWorker

if TYPE_CHECKING:
    from edgedetect.switches import Switches

log = logging.getLogger("edgedetect.pipeline")


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
    report_sinks: tuple[Sink, ...] | None = None  # None: the figures line in the log, one of its own


class CurrentSources(Mapping[str, Any]):
    """Each camera's source as it is now, by camera name: a reopen after a fault, or a stalled
    capture replaced, puts a new source object in the old one's place."""

    def __init__(self, cameras: Sequence[Camera]):
        self._cameras = {c.name: c for c in cameras}

    def __getitem__(self, name: str) -> Any:
        return self._cameras[name].capture.source

    def __iter__(self) -> Iterator[str]:
        return iter(self._cameras)

    def __len__(self) -> int:
        return len(self._cameras)


class Pipeline:
    """`switches`: each camera's `detect` and `motion` switches, read per frame (None: all ON)."""

    def __init__(self, model: Model, cameras: Sequence[CameraSpec], opts: PipelineOptions = PipelineOptions(),
                 switches: Switches | None = None):
        if not cameras:
            raise ValueError("a pipeline needs at least one camera")
        self.model = model
        self.opts = opts
        self.detector = DetectorStats(opts.stats_window, opts.sysfs_root, opts.procfs_root)
        self.scheduler: Scheduler[Camera] = Scheduler(Camera.detecting, Camera.pass_through)
        self.cameras: list[Camera] = []
        for spec in cameras:
            cam = Camera(spec, self.scheduler.arrived, self.detector.banner, opts.stats_window, opts.jpeg_quality,
                         opts.stall_timeout, switches)
            self.cameras.append(cam)
            self.scheduler.add(cam)
        self.figures = Figures(self.detector, [c.stats for c in self.cameras])
        self.sources = CurrentSources(self.cameras)
        self.first_result = threading.Event()
        self.add_result_listener(lambda r: self.first_result.set())
        self.reporter = StatsReporter(self.figures, opts.stats_interval,
                                      None if opts.report_sinks is None else list(opts.report_sinks))
        self.worker = InferenceWorker(model, self.scheduler, self.detector, opts.flt, opts.top_k, opts.max_failures)
        for cam in self.cameras:
            if cam.motion is not None:
                key = "motion" if len(self.cameras) == 1 else f"motion_{cam.name}"
                self.figures.extra[key] = cam.motion.figures

    def camera(self) -> Camera:
        """The first camera (today's single-camera URLs serve it)."""
        return self.cameras[0]

    def add_result_listener(self, fn: Callable[[Result], None]) -> None:
        """Called on the inference thread with every published result of every camera (the
        result's frame names its camera); must return at once."""
        for cam in self.cameras:
            cam.publisher.add_listener(fn)

    def add_frame_listener(self, fn: Callable[[Frame], None]) -> None:
        """Called on each camera's capture thread with every frame it captures; must return at once."""
        for cam in self.cameras:
            cam.frames.add(fn)

    def snapshot(self) -> dict[str, Any]:
        return self.figures.snapshot()

    def start(self) -> None:
        self.worker.start()
        for cam in self.cameras:
            cam.start()
        self.reporter.start()

    def stop(self) -> None:
        """Tell every stage to stop (returns at once; join waits)."""
        for cam in self.cameras:
            cam.stop()
        self.worker.stop()
        self.reporter.stop()
        self.scheduler.close()

    def join(self, timeout: float = 1.5) -> None:
        deadline = clock.now() + timeout
        for cam in self.cameras:
            cam.join(max(0.05, deadline - clock.now()))
        for part in (self.worker, self.reporter):
            part.join(max(0.05, deadline - clock.now()))

    # --- supervision (called periodically from the daemon's main loop) ----------------------

    def progress(self, now: float | None = None) -> Progress:
        """The detector's health (/healthz, the watchdog): alive while it progresses on any camera."""
        now = clock.now() if now is None else now
        return detector_progress(self.first_result.is_set(), [c.progress(now) for c in self.cameras])

    def check_source_stall(self) -> None:
        for cam in self.cameras:
            cam.check_stall()

    def show_no_signal(self) -> None:
        for cam in self.cameras:
            cam.show_no_signal()
