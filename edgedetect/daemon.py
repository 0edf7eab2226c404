"""The daemon: loads the model, builds the pipeline, serves it, attaches the extensions, and
supervises (source stalls, inference giving up, the extensions' ticks) until told to stop.

All wiring of stages lives in pipeline/builder.py; this module only decides what to build
from the config and keeps it alive.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

from edgedetect import clock
from edgedetect.config import Config, camera_configs
from edgedetect.detect.catalogue import Catalogue
from edgedetect.detect.model import Model
from edgedetect.detect.resolve import detect_filter, load_configured, resolve_model
from edgedetect.detect.runtime import default_threads
from edgedetect.extensions import Extension, Hooks, attach_all
from edgedetect.pipeline.builder import Pipeline, PipelineOptions
from edgedetect.pipeline.camera import Camera, CameraSpec
from edgedetect.pipeline.health import Progress
from edgedetect.pipeline.motion import MotionGate, motion_enabled
from edgedetect.pipeline.state import SourceState
from edgedetect.sinks.api import camera_json, detections_json
from edgedetect.sinks.viewer import Api, CameraView, ViewerServer
from edgedetect.sources import Source, make_source
from edgedetect.switches import Switches
from edgedetect.system import notify

log = logging.getLogger("edgedetect")

SHUTDOWN_JOIN_S = 1.5
MONITOR_PERIOD_S = 0.25


def pipeline_options(cfg: Config) -> PipelineOptions:
    return PipelineOptions(flt=detect_filter(cfg), top_k=cfg.detect.top_k,
                           max_failures=cfg.pipeline.max_inference_failures, jpeg_quality=cfg.http.jpeg_quality,
                           stats_window=cfg.stats.window, stats_interval=cfg.stats.interval,
                           sysfs_root=cfg.stats.sysfs_root, procfs_root=cfg.stats.procfs_root,
                           stall_timeout=cfg.pipeline.stall_timeout)


class Daemon:
    """Start with `start()`, stop with `stop()`; `run_until(event)` does both around a wait."""

    def __init__(self, cfg: Config, catalogue: Catalogue | None = None):
        self.cfg = cfg
        self.catalogue = catalogue or Catalogue.load(cfg.model.models_dir or None)
        self.exit_code = 0
        self.model: Model | None = None
        self.pipeline: Pipeline | None = None
        self.server: ViewerServer | None = None
        self.fatal = threading.Event()
        self.switches = Switches()
        self.extensions: list[Extension] = []
        self._ticks: list[Callable[[Progress, bool, float], None]] = []
        self._started = False
        # SIGHUP: cmd_run sets reload_requested; reload_config reads the file and the flags again.
        self.reload_requested = threading.Event()
        self.reload_config: Callable[[], Config] | None = None

    # --- start-up -------------------------------------------------------------------------

    def load_model(self) -> tuple[Model, str]:
        # A first start may download the model: ask systemd for time before its start timeout.
        notify.extend_timeout(120, "loading model")
        mc = self.cfg.model
        files = resolve_model(mc, self.catalogue)
        model = load_configured(mc, files)
        log.info("model %s: %s (%s), input %dx%d %s, %d threads%s", files.model, model.kind, model.family,
                 *model.input_size, model.input.dtype, mc.threads or default_threads(),
                 "".join(f", {note}" for note in model.runtime_notes))
        return model, files.name

    def _source_maker(self, cam_cfg: Config) -> Callable[[], Source]:
        model = self.model
        assert model is not None
        record = cam_cfg.record.enabled and cam_cfg.record.clips
        return lambda: make_source(cam_cfg.source, self.catalogue, model.input_size, model.keeps_aspect, record)

    def _camera_specs(self) -> list[CameraSpec]:
        """Every enabled camera, its source opened (a missing file or camera fails fast; later
        faults are retried by its capture thread)."""
        specs: list[CameraSpec] = []
        try:
            for name, cam_cfg in camera_configs(self.cfg):
                make = self._source_maker(cam_cfg)
                source = make()
                source.open()
                gate = MotionGate(cam_cfg.motion) if motion_enabled(cam_cfg.motion, source) else None
                own = self.cfg.cameras.get(name)
                specs.append(CameraSpec(name, make, source, gate, own.fps if own else 0.0,
                                        detect_filter(cam_cfg) if own and own.detect else None))
        except BaseException:
            for spec in specs:
                if spec.source is not None:
                    spec.source.close()
            raise
        return specs

    def start(self) -> None:
        """Load the model, open the sources and the port, start every thread. Errors in the
        user's setup raise UserError before any thread runs."""
        cfg = self.cfg
        self.model, model_name = self.load_model()
        specs = self._camera_specs()
        # The switches are set over MQTT: without it, a state file left from an earlier run
        # would hold cameras OFF with no way to turn them back ON.
        self.switches = Switches([s.name for s in specs], cfg.mqtt.state_file if cfg.mqtt.enabled else None)
        p = self.pipeline = Pipeline(self.model, specs, pipeline_options(cfg), self.switches)
        p.detector.model_name = model_name
        p.detector.threads = cfg.model.threads or default_threads()
        try:
            if cfg.http.enabled:
                self.server = ViewerServer(cfg.http, Api(stats=p.snapshot, healthy=self.healthy),
                                           {cam.name: self._view(cam) for cam in p.cameras})
                p.figures.extra["viewers"] = lambda: self.server.viewers if self.server else 0
            self.extensions = attach_all(self._hooks(model_name))
        except BaseException:
            for spec in specs:
                if spec.source is not None:
                    spec.source.close()
            if self.server:
                self.server.stop()
            raise
        p.start()
        if self.server:
            self.server.start()
            log.info("viewer at http://%s:%d/", _display_host(cfg.http.host), self.server.port)
        for ext in self.extensions:
            ext.start()
        self._started = True

    def _view(self, cam: Camera) -> CameraView:
        p = self.pipeline
        assert p is not None

        def stats() -> dict[str, Any]:
            snap = p.snapshot()
            return {**snap, **snap["cameras"][cam.name]} if "cameras" in snap else snap

        return CameraView(cam.publisher, stats, lambda: detections_json(cam.publisher.latest()[1]),
                          lambda: _healthy(cam.progress()), lambda: camera_json(cam.stats.figures(clock.now())))

    def _hooks(self, model_name: str) -> Hooks:
        p = self.pipeline
        assert p is not None

        def add_route(path: str, handler: Any, methods: tuple[str, ...] = ("GET",)) -> None:
            if self.server is not None:
                self.server.add_route(path, handler, methods)

        def add_figures(key: str, fn: Callable[[], Any]) -> None:
            p.figures.extra[key] = fn

        return Hooks(cfg=self.cfg, model_name=model_name, sources=p.sources,
                     on_result=p.add_result_listener, on_frame=p.add_frame_listener,
                     on_stats=p.reporter.sinks.append, on_tick=self._ticks.append,
                     add_route=add_route, add_figures=add_figures, figures=p.snapshot,
                     labels=tuple(self.model.labels.values()) if self.model else (), switches=self.switches)

    # --- running ----------------------------------------------------------------------------

    def healthy(self) -> tuple[bool, str]:
        """For /healthz. Stricter than the watchdog: a source that is away and being reconnected
        keeps systemd's watchdog fed (a restart would not bring it back) but is unhealthy."""
        assert self.pipeline is not None
        return _healthy(self.pipeline.progress())

    def tick(self) -> None:
        """Periodic supervision from the main thread."""
        p = self.pipeline
        assert p is not None
        if self.reload_requested.is_set():
            self.reload_requested.clear()
            self.reload()
        if p.worker.failed.is_set():
            self.exit_code = 1
            self.fatal.set()
        p.check_source_stall()
        p.show_no_signal()
        now = clock.now()
        progress = p.progress(now)
        for fn in self._ticks:
            fn(progress, p.first_result.is_set(), now)

    def reload(self) -> None:
        """Read the config again and apply what can change while running (SIGHUP); a config
        that fails to load is one error line, and the running one stays."""
        from edgedetect.errors import UserError, shorten
        from edgedetect.reload import apply as apply_reload

        if self.reload_config is None:
            log.warning("reload: no config to read again; ignored")
            return
        try:
            new = self.reload_config()
        except UserError as e:
            log.error("reload: %s; the running config stays", shorten(str(e)))
            return
        try:
            apply_reload(self, new)
        except Exception:  # noqa: BLE001 - a reload must never take the running daemon down
            log.exception("reload: failed; the running config stays as far as it was applied")

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
        assert self.pipeline is not None
        parts: list[Any] = [*self.extensions]
        if self.server is not None:
            parts.append(self.server)
        for part in parts:
            part.stop()
        self.pipeline.stop()
        deadline = clock.now() + SHUTDOWN_JOIN_S
        for part in parts:
            part.join(max(0.05, deadline - clock.now()))
        self.pipeline.join(max(0.05, deadline - clock.now()))
        log.info("stopped in %.2f s", clock.now() - t0)


def _healthy(p: Progress) -> tuple[bool, str]:
    """/healthz from the health rule's progress: stricter than the watchdog, a source that is
    away and being reconnected keeps systemd's watchdog fed (a restart would not bring it back)
    but is unhealthy."""
    if p.state == SourceState.RECONNECTING:
        return False, "source reconnecting"
    return p.ok, "ok" if p.state == SourceState.RUNNING else p.state


def _display_host(host: str) -> str:
    """The host for a URL: an IPv6 address in brackets (http://[::1]:8080/)."""
    return "localhost" if host in ("0.0.0.0", "::", "") else (f"[{host}]" if ":" in host else host)
