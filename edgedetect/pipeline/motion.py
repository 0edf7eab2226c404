"""Motion gating: skip inference while the scene is still.

Each frame is shrunk to a small grey thumbnail (about 96 pixels wide) and compared with the
thumbnail of the last frame that was inferred. When fewer than `threshold` of its pixels changed
by more than `pixel_delta` grey levels, the frame is not inferred and the last detections are
held; at least every `force_interval` seconds a frame is inferred anyway, so objects that stop
moving, and slow changes of light, are still looked at. Comparing with the last *inferred*
frame, not the previous one, means slow drift adds up until it triggers an inference.

The thumbnail costs about 0.1 ms a frame against tens of milliseconds for an inference; like
Frigate, motion is measured on a small grey image, never on the full frame.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import cv2
import numpy as np

from edgedetect.config import MotionConfig
from edgedetect.frames import Frame


class _HasLive(Protocol):
    live: bool


def motion_enabled(cfg: MotionConfig, source: _HasLive | None) -> bool:
    """`auto` gates live sources (cameras, streams) and never files: a recording is usually
    played to see every detection, and it has no idle time to save."""
    if cfg.enabled == "on":
        return True
    if cfg.enabled == "off":
        return False
    return bool(getattr(source, "live", False))


@dataclass(slots=True)
class MotionCounters:
    checked: int = 0
    motion: int = 0  # inferred because the scene changed (or the first frame)
    forced: int = 0  # inferred only because force_interval had passed
    skipped: int = 0  # not inferred: last detections held
    fraction: float = 0.0  # changed share of the newest frame's thumbnail


class MotionGate:
    """Used by one thread (the inference worker); `figures()` may be read from any thread."""

    def __init__(self, cfg: MotionConfig):
        self.cfg = cfg
        self.threshold = cfg.threshold
        self.pixel_delta = int(cfg.pixel_delta)
        self.force_interval = cfg.force_interval
        self.thumb_width = int(cfg.thumb_width)
        self.counters = MotionCounters()
        self.moving = False
        self._lock = threading.Lock()
        self._shape: tuple[int, ...] | None = None
        # Buffers made once per input size and reused, so gating allocates nothing per frame.
        self._half: np.ndarray | None = None
        self._small: np.ndarray | None = None
        self._cur: np.ndarray | None = None
        self._ref: np.ndarray | None = None
        self._diff: np.ndarray | None = None
        self._have_ref = False
        self._last_infer_t = 0.0

    def _buffers(self, image: np.ndarray) -> None:
        h, w = image.shape[:2]
        tw = min(self.thumb_width, w)
        th = max(1, round(h * tw / w))
        self._shape = image.shape
        self._half = np.empty((th * 2, tw * 2, 3), np.uint8)
        self._small = np.empty((th, tw, 3), np.uint8)
        self._cur = np.empty((th, tw), np.uint8)
        self._ref = np.empty((th, tw), np.uint8)
        self._diff = np.empty((th, tw), np.uint8)
        self._have_ref = False

    def thumbnail(self, frame: Frame) -> np.ndarray:
        """The frame as a small grey image (the gate's own buffer: copy it to keep it)."""
        # The camera's lores image is smaller than the main one and already RGB.
        image, code = (frame.lores, cv2.COLOR_RGB2GRAY) if frame.lores is not None else (frame.image, cv2.COLOR_BGR2GRAY)
        if image.shape != self._shape:
            self._buffers(image)
        assert self._half is not None and self._small is not None and self._cur is not None
        # A bilinear step to twice the size (it reads only a few pixels per output pixel), then
        # an area average: nearly the noise-smoothing of a full INTER_AREA at a quarter of its cost.
        cv2.resize(image, self._half.shape[1::-1], dst=self._half, interpolation=cv2.INTER_LINEAR)
        cv2.resize(self._half, self._small.shape[1::-1], dst=self._small, interpolation=cv2.INTER_AREA)
        cv2.cvtColor(self._small, code, dst=self._cur)
        return self._cur

    def changed_fraction(self) -> float:
        """Share of thumbnail pixels that differ from the reference by more than pixel_delta."""
        assert self._cur is not None and self._ref is not None and self._diff is not None
        cv2.absdiff(self._cur, self._ref, dst=self._diff)
        cv2.threshold(self._diff, self.pixel_delta, 255, cv2.THRESH_BINARY, dst=self._diff)
        return cv2.countNonZero(self._diff) / self._diff.size

    def should_infer(self, frame: Frame, t: float) -> bool:
        """Decide for one frame; call `inferred(t)` once the inference succeeded."""
        self.thumbnail(frame)
        with self._lock:
            self.counters.checked += 1
            if not self._have_ref:
                self.counters.motion += 1
                self.moving = True
                return True
            fraction = self.changed_fraction()
            self.counters.fraction = fraction
            if fraction > self.threshold:
                self.counters.motion += 1
                self.moving = True
                return True
            self.moving = False
            if t - self._last_infer_t >= self.force_interval:
                self.counters.forced += 1
                return True
            self.counters.skipped += 1
            return False

    def inferred(self, t: float) -> None:
        """The frame just checked was inferred: it becomes the reference."""
        self._cur, self._ref = self._ref, self._cur  # swap buffers, no copy
        self._have_ref = True
        self._last_infer_t = t

    def figures(self) -> dict[str, Any]:
        """The `motion` entry of /api/stats."""
        with self._lock:
            c = asdict(self.counters)
        c["fraction"] = round(c["fraction"], 4)
        return {"enabled": True, "moving": self.moving, **c}
