"""The local monitor: picamera2's own preview (DRM on the console, Qt on a desktop) with the
detections drawn as an RGBA overlay, updated per inference. The camera composites the
overlay, so no frame is copied or encoded for the monitor.

Other sources have no preview of their own; their monitor is the viewer page in a browser
(a Chromium kiosk, docs/service.md).
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import cv2
import numpy as np

from edgedetect.extensions import Hooks
from edgedetect.pipeline.annotate import FONT, colour_for
from edgedetect.frames import Detection, Result

log = logging.getLogger("edgedetect.sinks.display")

BOX_ALPHA = 255
LABEL_ALPHA = 200


def draw_overlay(detections: list[Detection], size: tuple[int, int]) -> np.ndarray:
    """An RGBA image of `size` (width, height): boxes and labels opaque, the rest transparent."""
    w, h = size
    img = np.zeros((h, w, 4), np.uint8)
    thick = max(2, round(min(w, h) / 240))
    scale = max(0.5, min(w, h) / 900)
    for d in detections:
        x0, y0, x1, y1 = d.pixel_box(w, h)
        b, g, r = colour_for(d.class_id)
        cv2.rectangle(img, (x0, y0), (x1, y1), (r, g, b, BOX_ALPHA), thick)
        text = f"{d.label} {d.score:.0%}"
        (tw, th), base = cv2.getTextSize(text, FONT, scale, 1)
        ty = max(y0, th + base + 2)
        cv2.rectangle(img, (x0, ty - th - base - 2), (x0 + tw + 4, ty), (r, g, b, LABEL_ALPHA), cv2.FILLED)
        cv2.putText(img, text, (x0 + 2, ty - base - 1), FONT, scale, (0, 0, 0, 255), 1, cv2.LINE_AA)
    return img


def preview_kind(mode: str) -> Any:
    """picamera2's Preview enum member for a display mode (imported only on the Pi)."""
    from picamera2 import Preview

    return {"drm": Preview.DRM, "qt": Preview.QTGL}[mode]


def preview_size(camera: Any, fallback: tuple[int, int]) -> tuple[int, int]:
    try:
        w, h = camera.camera_config["main"]["size"]
        return int(w), int(h)
    except (AttributeError, KeyError, TypeError, ValueError):
        return fallback


class CameraOverlay:
    """Owns the preview on a Picamera2 and redraws the overlay on each result."""

    def __init__(self, camera: Any, size: tuple[int, int]):
        self.camera = camera
        self.size = size
        self._on = False

    def on_result(self, result: Result) -> None:
        if self._on:
            self.camera.set_overlay(draw_overlay(result.detections, self.size))

    def start(self) -> None:
        self._on = True

    def stop(self) -> None:
        self._on = False
        # The preview is left to the camera: picamera2's preview thread also completes the
        # capture requests, and stopping it while capture waits would hang the capture thread.
        # The camera's close() (capture thread, on its way out) stops it.
        try:
            self.camera.set_overlay(None)
        except Exception:  # noqa: BLE001 - the camera may already be closing
            pass

    def join(self, timeout: float | None = None) -> None:
        pass


def start_preview(camera: Any, kind: Any) -> None:
    """Swap the camera's headless preview for a visible one. PiCamera.open() started the
    camera with picamera2's null preview (its event loop); only one runs at a time."""
    try:
        camera.stop_preview()
    except RuntimeError:
        pass  # no preview running yet
    try:
        camera.start_preview(kind)
    except Exception:
        camera.start_preview(False)  # back to the null preview, or capture would wait for ever
        raise


def attach(hooks: Hooks, preview: Callable[[str], Any] = preview_kind) -> CameraOverlay | None:
    from edgedetect.sources.picam import PiCamera

    mode = hooks.cfg.display.mode
    if mode == "none":
        return None
    name = hooks.cfg.display.camera or next(iter(hooks.sources))
    if name not in hooks.sources:
        log.warning("display.camera = %r: no such camera (expected one of %s); the monitor stays off",
                    name, ", ".join(hooks.sources))
        return None
    source = hooks.sources[name]
    if not isinstance(source, PiCamera) or source.camera is None:
        log.warning("display.mode = %r needs the Pi camera (source.uri = \"picam\"); for source %r "
                    "open the viewer page on the monitor instead (see docs/service.md, kiosk)",
                    mode, getattr(source, "name", hooks.cfg.source.uri))
        return None
    camera = source.camera
    try:
        start_preview(camera, preview(mode))
    except Exception as e:  # noqa: BLE001 - no monitor, a desktop holding DRM, no Qt
        log.warning("display.mode = %r: cannot start the preview (%s); detection continues without it",
                    mode, e)
        return None
    overlay = CameraOverlay(camera, preview_size(camera, source.size))
    hooks.on_result(lambda result: overlay.on_result(result) if result.camera == name else None)
    log.info("%s preview on the monitor, overlay %dx%d", mode, *overlay.size)
    return overlay
