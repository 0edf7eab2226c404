"""The reporting stage: every `interval` seconds one snapshot of the figures goes to each sink
(the log line, the journal, systemd's STATUS, MQTT ...)."""

from __future__ import annotations

import logging
from typing import Any, Callable

from edgedetect.pipeline.stage import StageThread
from edgedetect.pipeline.stats import Figures

log = logging.getLogger("edgedetect.pipeline.stats")

Sink = Callable[[dict[str, Any]], None]

# Figures the summary says in words, or that the journal fields keep for machines (uptime, model).
SUMMARISED = frozenset({
    "uptime_s", "source", "source_state", "model", "threads", "camera_fps", "inference_fps", "published_fps",
    "skipped_fps", "inference_ms", "latency_ms", "cpu_percent", "rss_mb", "temperature_c", "throttled",
    "throttled_flags", "cma_total_mb", "cma_free_mb", "cameras"})
# Counters that grow with every frame or every line: the rates above already say them.
THROUGHPUT = frozenset({
    "frames_captured", "frames_inferred", "frames_published", "frames_skipped", "motion_checked", "motion_motion",
    "motion_forced", "motion_skipped", "mqtt_messages_published", "display_shown"})


def _flat(snap: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in snap.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}_"))
        else:
            out[prefix + key] = value
    return out


def _ms(v: float) -> str:
    return f"{v:.1f}" if v < 10 else f"{v:.0f}"


def headline(fig: dict[str, Any], host: dict[str, Any]) -> str:
    """Rate, times, CPU, memory, temperature: what a person following `journalctl -f` reads."""
    parts = []
    state = fig.get("source_state", "running")
    fps, cam = fig.get("inference_fps", 0.0), fig.get("camera_fps")
    rate = f"{fps:.1f} fps" + (f" (camera {cam:.1f})" if cam is not None and abs(cam - fps) >= 0.5 else "")
    parts.append(rate if state == "running" else f"{state}: {rate}")
    if fig.get("skipped_fps"):
        parts.append(f"skipped {fig['skipped_fps']:.1f} fps")
    inf = host.get("inference_ms") or {}
    if "p50" in inf:
        parts.append(f"inference {_ms(inf['p50'])} ms (p95 {_ms(inf['p95'])})")
    lat = fig.get("latency_ms") or {}
    if "p50" in lat:
        parts.append(f"latency {_ms(lat['p50'])} ms")
    cpu = host.get("cpu_percent")
    if cpu:
        parts.append(f"cpu {cpu['process']:.0f}% (system {cpu['system']:.0f}%)")
    if "rss_mb" in host:
        parts.append(f"{host['rss_mb']:.0f} MB")
    if "temperature_c" in host:
        parts.append(f"{host['temperature_c']:.1f} C")
    if host.get("throttled") and int(host["throttled"], 16):
        parts.append(f"throttled={host['throttled']} ({','.join(host.get('throttled_flags') or [])})")
    return ", ".join(parts)


class LogSink:
    """The figures line in the log: a short summary that fits an 80 to 160 column `journalctl -f`,
    then only the counters (faults, events, anything an extension counts) that changed since
    the line before, with the change. The whole snapshot rides along as the record's `snapshot`
    (the journal's EDGEDETECT_* fields); /api/stats and /metrics have every figure too."""

    def __init__(self) -> None:
        self._last: dict[str, dict[str, Any]] = {}  # per line (detector, each camera): counters as last said

    def changed(self, line: str, figures: dict[str, Any]) -> str:
        last = self._last.setdefault(line, {})
        said = []
        for key, value in _flat({k: v for k, v in figures.items() if k not in SUMMARISED}).items():
            if key in THROUGHPUT or isinstance(value, (float, list)) or value is None:
                continue
            before = last.get(key, False if isinstance(value, bool) else 0 if isinstance(value, int) else "")
            last[key] = value
            if value == before:
                continue
            if isinstance(value, bool):
                said.append(f"{key}={'yes' if value else 'no'}")
            elif isinstance(value, int):
                said.append(f"{key}={value} ({value - before:+d})")
            else:
                said.append(f"{key}={value}")
        return "; " + ", ".join(said) if said else ""

    def __call__(self, snap: dict[str, Any]) -> None:
        cameras = snap.get("cameras")
        if not cameras:
            log.info("%s%s", headline(snap, snap), self.changed("", snap), extra={"snapshot": snap})
            return
        rest = {k: v for k, v in snap.items() if k != "cameras"}
        line = f"{len(cameras)} cameras: " + headline({"inference_fps": snap.get("inference_fps", 0.0)}, rest)
        log.info("%s%s", line, self.changed("", rest), extra={"snapshot": snap})
        for name, figures in cameras.items():
            log.info("camera %s: %s%s", name, headline(figures, {}), self.changed(name, figures))


class StatsReporter(StageThread):
    def __init__(self, stats: Figures, interval: float, sinks: list[Sink] | None = None):
        super().__init__("stats")
        self.stats = stats
        self.interval = interval
        self.sinks: list[Sink] = list(sinks) if sinks is not None else [LogSink()]

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            snap = self.stats.snapshot()
            for sink in self.sinks:
                try:
                    sink(snap)
                except Exception:  # noqa: BLE001 - one broken sink must not silence the others
                    log.exception("stats sink %r failed", sink)
