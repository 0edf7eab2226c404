"""Parts of the daemon that hook onto the core pipeline without the core knowing them:
systemd integration, the local monitor, events, metrics.

Each module named in EXTENSIONS has `attach(daemon) -> Extension | None`, called once the
model is loaded and the source is open, before any thread starts. It may add result
listeners (`daemon.publisher.add_listener`), stats sinks (`daemon.reporter.sinks`), HTTP
routes (`daemon.server.routes`) and supervision callbacks (`daemon.on_tick`); it returns an
object with start/stop/join, or None when its config leaves it off.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from edgedetect.daemon import Daemon

EXTENSIONS = (
    "edgedetect.service",   # sd_notify READY/WATCHDOG/STATUS, journal fields
    "edgedetect.display",   # picamera2 preview with a detection overlay
    "edgedetect.events",    # tracker -> MQTT events, counts, Home Assistant discovery
    "edgedetect.metrics",   # Prometheus /metrics
)


class Extension(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...

    def join(self, timeout: float | None = None) -> None: ...


def attach_all(daemon: "Daemon") -> list[Extension]:
    attached = []
    for name in EXTENSIONS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:  # not written yet in this checkout
                continue
            raise
        ext = module.attach(daemon)
        if ext is not None:
            attached.append(ext)
    return attached
