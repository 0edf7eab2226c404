"""Pipeline figures: rates, timing percentiles, drops, process and system load, temperature.

Stages record events; `snapshot()` turns them into the figures that `/api/stats`, the log
line and the other sinks show. Names follow Frigate's stats where they mean the same thing
(camera_fps, detection/inference fps, skipped_fps, inference_speed as inference_ms).
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any, Callable

import numpy as np
import psutil

from edgedetect import clock
from edgedetect.pipeline.state import SourceState, SourceStatus
from edgedetect.system.procfs import CmaLog, ProcfsReader
from edgedetect.system.sysfs import SysfsReader, ThrottleLog

RATE_WINDOW_S = 5.0


class RateMeter:
    """Events per second over the last few seconds."""

    def __init__(self, window_s: float = RATE_WINDOW_S):
        self.window = window_s
        self._times: deque[float] = deque()
        self.total = 0

    def tick(self, t: float) -> None:
        self._times.append(t)
        self.total += 1
        cutoff = t - self.window
        while self._times[0] < cutoff:  # bounded even if nobody reads the rate for a long time
            self._times.popleft()

    def rate(self, t: float) -> float:
        cutoff = t - self.window
        while self._times and self._times[0] < cutoff:
            self._times.popleft()
        n = len(self._times)
        if n < 2:
            return 0.0
        # Over the span the window actually covers, so the figure is right from the start.
        span = max(t - self._times[0], self._times[-1] - self._times[0])
        return (n - 1) / span if span > 0 else 0.0


class Samples:
    """The last N values of a timing, for mean and percentiles."""

    def __init__(self, size: int):
        self._values: deque[float] = deque(maxlen=size)

    def add(self, v: float) -> None:
        self._values.append(v)

    def summary(self) -> dict[str, float]:
        if not self._values:
            return {}
        a = np.fromiter(self._values, float, len(self._values))
        p50, p95 = np.percentile(a, [50, 95])
        return {"mean": round(float(a.mean()), 2), "p50": round(float(p50), 2), "p95": round(float(p95), 2)}


class CameraStats:
    """One camera's figures: what its source delivered, what of it the detector took, what was
    published, and the state of its source."""

    def __init__(self, name: str = "", window: int = 120, dropped: Callable[[], int] = lambda: 0):
        self.name = name  # the camera's name ([cameras.NAME]; "camera" for [source])
        self._lock = threading.Lock()
        self.camera = RateMeter()
        self.inference = RateMeter()  # this camera's frames inferred
        self.published = RateMeter()
        self.skipped = RateMeter()
        self.latency_ms = Samples(window)
        self.frames_corrupt = 0  # frames a stream sent that could not be decoded (skipped)
        self.packets_dropped = 0  # recorded-stream packets the source lost before a read took them
        self.camera_restarts = 0  # a camera brought back in-process: stop/start, or a new object
        self.camera_reopens = 0  # of those, the ones that needed a new camera object
        self._dropped = dropped
        self.source = SourceStatus()

    @property
    def source_state(self) -> SourceState:
        return self.source.state

    @property
    def source_name(self) -> str:
        return self.source.name

    def captured(self, t: float) -> None:
        with self._lock:
            self.camera.tick(t)

    def inferred(self, t: float) -> None:
        with self._lock:
            self.inference.tick(t)

    def skipped_frame(self, t: float) -> None:
        with self._lock:
            self.skipped.tick(t)

    def corrupt_frame(self) -> None:
        with self._lock:
            self.frames_corrupt += 1

    def packets_lost(self, n: int) -> None:
        with self._lock:
            self.packets_dropped += n

    def published_frame(self, t: float, t_capture: float) -> None:
        with self._lock:
            self.published.tick(t)
            self.latency_ms.add((t - t_capture) * 1000.0)

    def camera_restarted(self, how: str) -> None:
        """`how`: "restart" (the same camera object stopped and started) or "reopen" (a new one)."""
        with self._lock:
            self.camera_restarts += 1
            if how == "reopen":
                self.camera_reopens += 1

    def figures(self, t: float) -> dict[str, Any]:
        with self._lock:
            return {
                "source": self.source_name,
                "source_state": str(self.source_state),
                # A source that is away delivers nothing, whatever the last seconds' rate says.
                "camera_fps": round(self.camera.rate(t), 2) if self.source_state is SourceState.RUNNING else 0.0,
                "inference_fps": round(self.inference.rate(t), 2),
                "published_fps": round(self.published.rate(t), 2),
                "skipped_fps": round(self.skipped.rate(t), 2),
                "frames_captured": self.camera.total,
                "frames_inferred": self.inference.total,
                "frames_published": self.published.total,
                "frames_skipped": self.skipped.total,
                "frames_corrupt": self.frames_corrupt,
                "packets_dropped": self.packets_dropped,
                "dropped_frames": self._dropped(),
                "camera_restarts": self.camera_restarts,
                "camera_reopens": self.camera_reopens,
                "latency_ms": self.latency_ms.summary(),
            }


class DetectorStats:
    """The detector's figures (every camera's inferences together) and the host's: CPU, memory,
    temperature, throttling, CMA."""

    def __init__(self, window: int = 120, sysfs_root: str = "/sys", procfs_root: str = "/proc"):
        self._lock = threading.Lock()
        self.inference = RateMeter()
        self.inference_ms = Samples(window)
        self.inference_errors = 0
        self._sysfs = SysfsReader(sysfs_root)
        self._procfs = ProcfsReader(procfs_root)
        # The Pi's health, logged on change only (whoever reads the figures, however often).
        self._throttle_log = ThrottleLog()
        self._cma_log = CmaLog()
        self._process = psutil.Process()
        self.started = clock.now()
        self.model_name = ""
        self.threads = 0  # the interpreter's threads, for the detector's line with several cameras
        self._cpu: dict[str, float] | None = None  # not measured yet: left out of the figures, not 0
        self._cpu_t = self.started
        self._cpu_base = _cpu_times(self._process)

    def _cpu_percent(self, t: float) -> dict[str, float] | None:
        # One sampler, under the stats lock, on counters of its own: psutil.cpu_percent(None)
        # keeps its baseline per calling thread, so each thread's first reading would be 0.0.
        # At most one new sample a second, so that several readers (API, log, MQTT) do not
        # shorten each other's interval to noise; the first once 0.2 s have passed.
        if t - self._cpu_t >= 1.0 or (self._cpu is None and t - self._cpu_t >= 0.2):
            now = _cpu_times(self._process)
            share = _cpu_share(self._cpu_base, now)
            if share is not None:
                self._cpu = share
                self._cpu_base, self._cpu_t = now, t
        return dict(self._cpu) if self._cpu is not None else None

    def inferred(self, t: float, ms: float) -> None:
        with self._lock:
            self.inference.tick(t)
            self.inference_ms.add(ms)

    def inference_failed(self) -> None:
        with self._lock:
            self.inference_errors += 1

    def banner(self) -> str:
        """The short figures drawn on the stream; cheap enough to call per frame."""
        t = clock.now()
        with self._lock:
            fps = self.inference.rate(t)
            ms = self.inference_ms.summary().get("p50", 0.0)
        return f"{fps:.1f} fps  {ms:.1f} ms"

    def figures(self, t: float) -> dict[str, Any]:
        with self._lock:
            return {
                "uptime_s": round(t - self.started, 1),
                "model": self.model_name,
                "inference_fps": round(self.inference.rate(t), 2),
                "frames_inferred": self.inference.total,
                "inference_errors": self.inference_errors,
                "inference_ms": self.inference_ms.summary(),
            }

    def host(self, t: float, camera_on: bool) -> dict[str, Any]:
        """CPU, memory and the Pi's health; `camera_on`: a Pi camera is running (CMA matters)."""
        snap: dict[str, Any] = {}
        with self._lock:
            cpu = self._cpu_percent(t)
        if cpu is not None:
            snap["cpu_percent"] = cpu
        snap["rss_mb"] = round(self._process.memory_info().rss / 2**20, 1)
        thermal = self._sysfs.read()
        if thermal.temperature_c is not None:
            snap["temperature_c"] = round(thermal.temperature_c, 1)
        if thermal.throttled is not None:
            snap["throttled"] = hex(thermal.throttled)
            snap["throttled_flags"] = thermal.flags
        self._throttle_log.update(thermal)
        cma = self._procfs.cma()
        if cma is not None:
            snap["cma_total_mb"] = round(cma.total_mb, 1)
            snap["cma_free_mb"] = round(cma.free_mb, 1)
        self._cma_log.update(cma, camera_on)
        return snap


# The one-camera snapshot keeps the order of keys its readers (the log line, scripts) know.
ONE_CAMERA_ORDER = ("uptime_s", "source", "source_state", "model", "camera_fps", "inference_fps", "published_fps",
                    "skipped_fps", "frames_captured", "frames_inferred", "frames_published", "frames_skipped",
                    "frames_corrupt", "packets_dropped", "dropped_frames", "inference_errors", "camera_restarts", "camera_reopens",
                    "inference_ms", "latency_ms")


class Figures:
    """What `/api/stats`, the log line and the other report sinks show: the detector's figures
    and each camera's. With one camera, one flat table (the camera's rates are the detector's);
    with several, the detector's at the top and each camera's under `cameras`."""

    def __init__(self, detector: DetectorStats, cameras: list[CameraStats]):
        self.detector = detector
        self.cameras = cameras
        self.extra: dict[str, Callable[[], Any]] = {}

    def snapshot(self) -> dict[str, Any]:
        t = clock.now()
        det = self.detector.figures(t)
        parts = {c.name: c.figures(t) for c in self.cameras}
        if len(parts) == 1:
            merged = {**next(iter(parts.values())), **det}
            snap: dict[str, Any] = {k: merged[k] for k in ONE_CAMERA_ORDER}
        else:
            snap = {**det, "threads": self.detector.threads, "cameras": parts}
        picam_on = any(c.source_name == "picam" and c.source_state is SourceState.RUNNING for c in self.cameras)
        snap.update(self.detector.host(t, picam_on))
        for key, fn in self.extra.items():
            snap[key] = fn()
        return snap


def _cpu_times(process: psutil.Process) -> tuple[float, float, float]:
    """(process CPU seconds, system busy CPU seconds, system total CPU seconds)."""
    p = process.cpu_times()
    s = psutil.cpu_times()
    total = sum(s)
    idle = s.idle + getattr(s, "iowait", 0.0)
    return p.user + p.system, total - idle, total


def _cpu_share(a: tuple[float, float, float], b: tuple[float, float, float]) -> dict[str, float] | None:
    """Process CPU (100 = one core, as top shows it) and system CPU (100 = all cores) between two
    samples; None when no time passed on the system's clock between them (nothing measured)."""
    total = b[2] - a[2]
    if total <= 0:
        return None
    cores = psutil.cpu_count() or 1
    return {"process": round(100.0 * cores * (b[0] - a[0]) / total, 1),
            "system": round(100.0 * (b[1] - a[1]) / total, 1)}
