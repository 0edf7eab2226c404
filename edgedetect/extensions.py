"""Extensions: the parts of the daemon that hang off the pipeline without the pipeline knowing
them (systemd integration, the monitor overlay, MQTT events, Prometheus metrics).

Each is registered below, once, with the config test that says whether it is wanted. Its
module has `attach(hooks: Hooks) -> Extension | None`, called after the model is loaded and
the source is open, before any thread starts. It gets `Hooks`, a narrow object: the config,
the figures, and ways to be called (each result, each captured frame, each stats snapshot,
each supervision tick) or to add an HTTP route or stats figures. It never gets the daemon.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol

from edgedetect.config import Config, camera_configs
from edgedetect.frames import Frame, Result
from edgedetect.pipeline.health import Progress
from edgedetect.switches import Switches

if TYPE_CHECKING:
    from edgedetect.routes import Route

log = logging.getLogger("edgedetect.extensions")


class Extension(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...

    def join(self, timeout: float | None = None) -> None: ...


@dataclass(frozen=True, slots=True)
class Registration:
    module: str
    wanted: Callable[[Config], bool]
    needs: str  # what to install when the module's optional dependency is missing


EXTENSIONS: tuple[Registration, ...] = (
    Registration("edgedetect.sinks.systemd", lambda c: True, ""),  # sd_notify READY/WATCHDOG/STATUS
    Registration("edgedetect.sinks.display", lambda c: c.display.mode != "none",
                 "picamera2 (apt install python3-picamera2)"),
    # a tracker per camera for MQTT events and the event store ([record], or a camera's own)
    Registration("edgedetect.sinks.events",
                 lambda c: c.mqtt.enabled or any(cc.record.enabled for _, cc in camera_configs(c)),
                 "paho-mqtt (pip install 'paho-mqtt>=2')"),
    Registration("edgedetect.sinks.zones", lambda c: c.http.enabled, ""),  # /api/zones: the viewer's overlay
    # /events with recording off: how to turn it on
    Registration("edgedetect.storage.history",
                 lambda c: c.http.enabled and not any(cc.record.enabled for _, cc in camera_configs(c)), ""),
    Registration("edgedetect.sinks.metrics", lambda c: c.http.enabled,
                 "prometheus-client (pip install prometheus-client)"),
)


@dataclass(frozen=True)
class Hooks:
    """What an extension may see and do. Callbacks run on the pipeline's threads and must
    return at once; an exception in one is logged and counted and stops nothing else."""

    cfg: Config
    model_name: str
    sources: Mapping[str, Any]  # each camera's source as it is now, by name (the monitor follows a reopened Pi camera)
    on_result: Callable[[Callable[[Result], None]], None]  # every published result (inference thread)
    on_frame: Callable[[Callable[[Frame], None]], None]  # every captured frame (capture thread)
    on_stats: Callable[[Callable[[dict[str, Any]], None]], None]  # every stats snapshot (stats thread)
    on_tick: Callable[[Callable[[Progress, bool, float], None]], None]  # (progress, first result, now), main thread
    add_route: Callable[[str, "Route"], None]  # an HTTP GET path on the viewer server (no-op without one)
    add_figures: Callable[[str, Callable[[], Any]], None]  # a key in /api/stats, the log line and /metrics
    figures: Callable[[], dict[str, Any]]  # the current stats snapshot
    labels: tuple[str, ...] = ()  # the model's label names
    # each camera's switches (detect, motion, snapshots, recordings), set over MQTT; read with
    # switches.on(camera, switch) from any thread. The default has every switch ON.
    switches: Switches = field(default_factory=Switches)


def attach_all(hooks: Hooks, registry: tuple[Registration, ...] = EXTENSIONS) -> list[Extension]:
    attached = []
    for reg in registry:
        if not reg.wanted(hooks.cfg):
            continue
        try:
            module = importlib.import_module(reg.module)
        except ModuleNotFoundError as e:
            if e.name and reg.module.startswith(e.name):
                raise
            log.warning("%s: needs %s, which is not installed (%s); it stays off", reg.module,
                        reg.needs or e.name, e)
            continue
        ext = module.attach(hooks)
        if ext is not None:
            attached.append(ext)
    return attached
