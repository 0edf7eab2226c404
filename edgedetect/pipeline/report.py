"""The reporting stage: every `interval` seconds one snapshot of the figures goes to each sink
(the log line, the journal, systemd's STATUS, MQTT ...)."""

from __future__ import annotations

import logging
from typing import Any, Callable

from edgedetect.pipeline.stage import StageThread
from edgedetect.pipeline.stats import PipelineStats, log_line

log = logging.getLogger("edgedetect.pipeline.stats")

Sink = Callable[[dict[str, Any]], None]


def log_sink(snap: dict[str, Any]) -> None:
    log.info("%s", log_line(snap), extra={"snapshot": snap})


class StatsReporter(StageThread):
    def __init__(self, stats: PipelineStats, interval: float, sinks: list[Sink] | None = None):
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
