"""systemd integration: READY once the first frame is processed, WATCHDOG pings only while
the pipeline makes progress, a short STATUS with the figures, STOPPING on shutdown.

Nothing here runs a thread: the checks ride on the daemon's 0.25 s supervision tick (main
thread), so a wedged main loop stops the pings too.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any, Callable

from edgedetect.extensions import Hooks
from edgedetect.pipeline.health import Progress
from edgedetect.system import notify

log = logging.getLogger("edgedetect.sinks.systemd")


def summary(snap: Mapping[str, Any] | None) -> str:
    """The figures part of STATUS=, short enough for `systemctl status`'s one line."""
    if not snap:
        return ""
    parts = [f"{snap.get('inference_fps', 0.0):.1f} fps"]
    ms = (snap.get("inference_ms") or {}).get("p50")
    if ms is not None:
        parts.append(f"inference {ms:.0f} ms")
    if "temperature_c" in snap:
        parts.append(f"{snap['temperature_c']:.0f} C")
    flags = [f for f in snap.get("throttled_flags", []) if not f.endswith("_occurred")]
    if flags:
        parts.append("/".join(flags))
    return ", ".join(parts)


class ServiceNotifier:
    def __init__(self, watchdog_s: float | None, send: Callable[..., bool] = notify.notify):
        self.watchdog_s = watchdog_s
        self._send = send
        self._ready = False
        self._paused = False  # pings withheld: logged once per stall, not per tick
        self._last_ping = float("-inf")
        self._last_status = ""
        self._snapshot: dict[str, Any] | None = None  # written by the stats thread, read by tick

    # Stats sink (stats thread): keep the newest figures for the next STATUS.
    def sink(self, snap: dict[str, Any]) -> None:
        self._snapshot = snap

    def status_line(self, p: Progress) -> str:
        figures = summary(self._snapshot)
        if p.state == "running":
            return figures or "running"
        return f"{p.state}; {figures}" if figures else p.state

    def tick(self, p: Progress, first_result: bool, now: float) -> None:
        lines: list[str] = []
        if not self._ready and first_result:
            self._ready = True
            lines.append("READY=1")
        if self._ready and p.ok and self.watchdog_s and now - self._last_ping >= self.watchdog_s:
            self._last_ping = now
            lines.append("WATCHDOG=1")
        if self._ready and p.ok == self._paused:
            self._paused = not p.ok
            if self._paused:
                log.warning("pipeline %s; watchdog pings paused", p.state)
            else:
                log.info("pipeline %s again; watchdog pings resumed", p.state)
        status = self.status_line(p) if self._ready else ""
        if status and status != self._last_status:
            self._last_status = status
            lines.append(notify.status_text(status))
        if lines:
            self._send(*lines)

    def start(self) -> None:
        pass  # driven by the daemon's tick

    def stop(self) -> None:
        self._send("STOPPING=1", notify.status_text("stopping"))

    def join(self, timeout: float | None = None) -> None:
        pass


def attach(hooks: Hooks, env: Mapping[str, str] | None = None) -> ServiceNotifier | None:
    env = os.environ if env is None else env
    if not notify.enabled(env):
        return None
    svc = ServiceNotifier(notify.watchdog_interval(env), send=lambda *lines: notify.notify(*lines, env=env))
    hooks.on_tick(svc.tick)
    hooks.on_stats(svc.sink)
    return svc
