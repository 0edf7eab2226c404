"""The reporting stage: every `interval` seconds one snapshot of the figures goes to each sink
(the log line, the journal, systemd's STATUS, MQTT ...)."""

from __future__ import annotations

import logging
from typing import Any, Callable

from edgedetect.pipeline.stage import StageThread
from edgedetect.pipeline.stats import Figures, log_line

log = logging.getLogger("edgedetect.pipeline.stats")

Sink = Callable[[dict[str, Any]], None]


CAMERA_LINE = ("source_state", "camera_fps", "inference_fps", "dropped_frames", "latency_ms")


def log_sink(snap: dict[str, Any]) -> None:
    """One line; with several cameras, the detector's line and a short one per camera."""
    cameras = snap.get("cameras")
    if not cameras:
        log.info("%s", log_line(snap), extra={"snapshot": snap})
        return
    log.info("%s", log_line({k: v for k, v in snap.items() if k != "cameras"}), extra={"snapshot": snap})
    for name, figures in cameras.items():
        log.info("%s", log_line({"camera": name, **{k: figures[k] for k in CAMERA_LINE}}))


class StatsReporter(StageThread):
    def __init__(self, stats: Figures, interval: float, sinks: list[Sink] | None = None):
        super().__init__("stats")
        self.stats = stats
        self.interval = interval
        self.sinks: list[Sink] = list(sinks) if sinks is not None else [log_sink]

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            snap = self.stats.snapshot()
            for sink in self.sinks:
                try:
                    sink(snap)
                except Exception:  # noqa: BLE001 - one broken sink must not silence the others
                    log.exception("stats sink %r failed", sink)
