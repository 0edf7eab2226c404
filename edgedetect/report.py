"""The reporting stage: every `interval` seconds one snapshot of the figures goes to each sink
(the log line, the journal, systemd's STATUS, MQTT ...)."""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

from edgedetect.stats import PipelineStats, log_line

log = logging.getLogger("edgedetect.stats")

Sink = Callable[[dict[str, Any]], None]


def log_sink(snap: dict[str, Any]) -> None:
    log.info("%s", log_line(snap), extra={"snapshot": snap})


class StatsReporter:
    def __init__(self, stats: PipelineStats, interval: float, sinks: list[Sink] | None = None):
        self.stats = stats
        self.interval = interval
        self.sinks: list[Sink] = list(sinks) if sinks is not None else [log_sink]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stats", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            snap = self.stats.snapshot()
            for sink in self.sinks:
                try:
                    sink(snap)
                except Exception:  # noqa: BLE001 - one broken sink must not silence the others
                    log.exception("stats sink %r failed", sink)
