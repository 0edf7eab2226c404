"""The daemon: wires source -> latest-frame slot -> inference -> publisher -> sinks, and stops
them all in order.

    capture thread ──▶ LatestSlot ──▶ inference thread ──▶ Publisher ──▶ HTTP viewers
                                                            ├──▶ result listeners (events, overlay)
                                   stats reporter thread ◀──┘    (log line, journal, STATUS)
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from edgedetect import clock, notify
from edgedetect.capture import CaptureThread
from edgedetect.catalogue import Catalogue
from edgedetect.config import Config, ModelConfig
from edgedetect.errors import ModelError, UserError
from edgedetect.extensions import Extension, attach_all
from edgedetect.frames import Frame, Result
from edgedetect.health import Progress, progress
from edgedetect.model import Classifier, DetectFilter, Detector, load_model
from edgedetect.motion import MotionGate, motion_enabled
from edgedetect.publish import Publisher
from edgedetect.runtime import default_threads
from edgedetect.report import StatsReporter, log_sink
from edgedetect.server import Api, ViewerServer
from edgedetect.slot import LatestSlot
from edgedetect.sources import Source, make_source
from edgedetect.stats import PipelineStats
from edgedetect.worker import InferenceWorker

log = logging.getLogger("edgedetect")

SHUTDOWN_JOIN_S = 1.5
MAX_SOURCE_RESTARTS = 3  # stall restarts without a frame before the source counts as failed
MONITOR_PERIOD_S = 0.25


@dataclass(frozen=True, slots=True)
class ModelFiles:
    model: Path
    labels: Path | None
    name: str


def resolve_model(mc: ModelConfig, catalogue: Catalogue, download: bool = True) -> ModelFiles:
    """A catalogue name or a path to a .tflite, and its labels file."""
    labels = Path(mc.labels) if mc.labels else None
    if mc.path in catalogue.entries:
        entry = catalogue.get(mc.path)
        if entry.kind not in ("detector", "classifier"):
            raise UserError(f"model.path: {mc.path!r} is a {entry.kind}, not a model")
        found = catalogue.pull(mc.path) if download else catalogue.resolve(mc.path)
        return ModelFiles(found.paths["model"], labels or found.paths.get("labels"), mc.path)
    path = Path(mc.path).expanduser()
    if not path.exists():
        raise ModelError(f"{path}: model file not found (expected a .tflite file or one of: "
                         f"{', '.join(n for n, e in catalogue.entries.items() if e.kind != 'video')})")
    if labels is None:
        labels = next((p for p in labels_candidates(path) if p.is_file()), None)
    return ModelFiles(path, labels, path.name)


def labels_candidates(model: Path) -> list[Path]:
    stem = model.with_suffix("")
    return [Path(f"{stem}.txt"), Path(f"{stem}_labels.txt"), Path(f"{stem}.labels.txt"), model.parent / "labels.txt"]


def detect_filter(cfg: Config) -> DetectFilter:
    d = cfg.detect
    return DetectFilter(d.threshold, frozenset(d.allow), frozenset(d.deny), d.max_detections)


def detections_json(result: Result | None) -> dict[str, Any]:
    """The newest frame's detections in source-frame pixels, as /api/detections serves them."""
    if result is None or result.frame.index < 0:
        return {"frame": None, "timestamp": None, "detections": []}
    h, w = result.frame.image.shape[:2]
    # Monotonic capture time shown as wall-clock time for other programs.
    ts = clock.wall() - (clock.now() - result.frame.t_capture)
    out: dict[str, Any] = {
        "frame": result.frame.index,
        "timestamp": round(ts, 3),
        "width": w,
        "height": h,
        "inference_ms": round(result.inference_ms, 2),
        "detections": [
            {"label": d.label, "class_id": d.class_id, "score": round(d.score, 4), "box": list(d.pixel_box(w, h))}
            for d in result.detections
        ],
    }
    if result.classes:
        out["classes"] = [{"label": c.label, "class_id": c.class_id, "score": round(c.score, 4)}
                          for c in result.classes]
    return out


class Daemon:
    """Start with `start()`, stop with `stop()`; `run_until(event)` does both around a wait."""

    def __init__(self, cfg: Config, catalogue: Catalogue | None = None):
        self.cfg = cfg
        self.catalogue = catalogue or Catalogue.load(cfg.model.models_dir or None)
        self.exit_code = 0
        self.model: Detector | Classifier | None = None
        self.source: Source | None = None  # the source opened at start (extensions read it)
        self.slot: LatestSlot[Frame] = LatestSlot()
        self.stats = PipelineStats(cfg.stats.window, cfg.stats.sysfs_root, dropped=lambda: self.slot.dropped)
        self.publisher = Publisher(self.stats, cfg.http.jpeg_quality, banner=self.stats.banner)
        self.server: ViewerServer | None = None
        self.capture: CaptureThread | None = None
        self.worker: InferenceWorker | None = None
        self.reporter = StatsReporter(self.stats, cfg.stats.interval, [log_sink])
        self.source_restarts = 0
        self.first_result = threading.Event()
        self.fatal = threading.Event()
        self._started = False
        self.on_tick: list[Callable[["Daemon"], None]] = []  # called by the monitor loop
        self.extensions: list[Extension] = []

    # --- start-up -------------------------------------------------------------------------

    def load_model(self) -> Detector | Classifier:
        # A first start may download the model: ask systemd for time before its start timeout.
        notify.extend_timeout(120, "loading model")
        files = resolve_model(self.cfg.model, self.catalogue)
        mc = self.cfg.model
        model = load_model(files.model, files.labels, mc.threads or None, tuple(mc.input_range))
        if isinstance(model, Detector) and not model.labels:
            log.warning("%s: no labels file found; classes are shown as numbers", files.model)
        self.stats.model_name = files.name
        log.info("model %s: %s, input %dx%d %s, %d threads", files.model, model.kind,
                 *model.input_size, model.input.dtype, mc.threads or default_threads())
        return model

    def start(self) -> None:
        """Load the model, open the source and the port, start every thread. Errors in the
        user's setup raise UserError before any thread runs."""
        cfg = self.cfg
        self.model = self.load_model()
        source = make_source(cfg.source, self.catalogue, self.model.input_size)
        self.stats.source_name = source.name
        source.open()  # fail fast on a missing file or camera; later faults are retried
        self.source = source
        if cfg.http.enabled:
            try:
                self.server = ViewerServer(cfg.http, self.publisher, Api(
                    stats=self.stats.snapshot,
                    detections=lambda: detections_json(self.publisher.latest()[1]),
                    healthy=self.healthy,
                ))
            except UserError:
                source.close()
                raise
            self.stats.extra["viewers"] = lambda: self.server.viewers if self.server else 0
        self.publisher.add_listener(lambda r: self.first_result.set())
        self.capture = CaptureThread(self._make_source, self.slot, self.stats, source=source)
        gate = MotionGate(cfg.motion) if motion_enabled(cfg.motion, source) else None
        self.worker = InferenceWorker(self.model, self.slot, self.publisher.publish, self.stats,
                                      detect_filter(cfg), cfg.detect.top_k, cfg.pipeline.max_inference_failures,
                                      motion=gate)
        try:
            self.extensions = attach_all(self)
        except BaseException:
            source.close()
            if self.server:
                self.server.stop()
            raise
        self.worker.start()
        self.capture.start()
        if self.server:
            self.server.start()
            log.info("viewer at http://%s:%d/", _display_host(cfg.http.host), self.server.port)
        self.reporter.start()
        for ext in self.extensions:
            ext.start()
        self._started = True

    def _make_source(self):
        assert self.model is not None
        return make_source(self.cfg.source, self.catalogue, self.model.input_size)

    # --- running ----------------------------------------------------------------------------

    def progress(self, now: float | None = None) -> Progress:
        worker, capture = self.worker, self.capture
        return progress(self.first_result.is_set(), self.stats.source_state,
                        worker.last_result_t if worker is not None else 0.0,
                        capture.idle_s if capture is not None else 0.0,
                        clock.now() if now is None else now, self.cfg.pipeline.stall_timeout)

    def healthy(self) -> tuple[bool, str]:
        """For /healthz. Stricter than the watchdog: a source that is away and being reconnected
        keeps systemd's watchdog fed (a restart would not bring it back) but is unhealthy."""
        p = self.progress()
        if p.state == "reconnecting":
            return False, "source reconnecting"
        return p.ok, "ok" if p.state == "running" else p.state

    def _check_source_stall(self) -> None:
        """A capture call that hangs (driver, network) never raises: notice the silence and
        restart the source in a new thread; after a few fruitless restarts, report failure."""
        cap = self.capture
        if cap is None or self.stats.source_state not in ("running", "reconnecting"):
            return
        if cap.last_frame_t > cap.started_t:
            self.source_restarts = 0
        if cap.idle_s <= self.cfg.pipeline.stall_timeout:
            return
        self.source_restarts += 1
        if self.source_restarts > MAX_SOURCE_RESTARTS:
            log.error("source %s: no frame after %d restarts; giving up (systemd's watchdog restarts the service)",
                      self.stats.source_name, MAX_SOURCE_RESTARTS)
            self.stats.source_state = "failed"
            return
        log.warning("source %s: no frame for %.0f s; restarting it (%d/%d)", self.stats.source_name,
                    cap.idle_s, self.source_restarts, MAX_SOURCE_RESTARTS)
        cap.abandon()
        self.stats.source_state = "reconnecting"
        self.capture = CaptureThread(self._make_source, self.slot, self.stats)
        self.capture.start()

    def tick(self) -> None:
        """Periodic supervision from the main thread."""
        if self.worker is not None and self.worker.failed.is_set():
            self.exit_code = 1
            self.fatal.set()
        self._check_source_stall()
        if self.capture is not None and self.stats.source_state in ("reconnecting", "failed"):
            if not self.publisher.placeholder:
                self.publisher.publish_placeholder(f"no signal: {self.stats.source_state}")
        for fn in self.on_tick:
            fn(self)

    def run_until(self, stop: threading.Event) -> int:
        self.start()
        try:
            while not stop.is_set() and not self.fatal.is_set():
                self.tick()
                stop.wait(MONITOR_PERIOD_S)
        finally:
            self.stop()
        return self.exit_code

    # --- shutdown ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop every stage and join its thread; bounded so SIGTERM exits within 2 s."""
        if not self._started:
            return
        self._started = False
        t0 = clock.now()
        log.info("stopping")
        parts = [*self.extensions]
        parts += [p for p in (self.capture, self.worker, self.server, self.reporter) if p is not None]
        for p in parts:
            p.stop()
        self.slot.close()
        deadline = clock.now() + SHUTDOWN_JOIN_S
        for p in parts:
            p.join(max(0.05, deadline - clock.now()))
        log.info("stopped in %.2f s", clock.now() - t0)


def _display_host(host: str) -> str:
    return "localhost" if host in ("0.0.0.0", "::", "") else host
