"""The local monitor, for every source, without a desktop.

`kms`: the annotated frames (boxes, labels and a short figures line) drawn straight to the
screen, through DRM/KMS or the framebuffer (sinks/screens.py); several cameras share the screen
as a grid. `drm` / `qt`: the Pi camera's own picamera2 preview with the boxes as an RGBA overlay,
which the camera composites, so no frame is copied for the monitor. `auto`: `drm` for the Pi
camera, `kms` for anything else, nothing while no monitor is connected.

Either way the drawing runs on a thread of its own, from the newest published result of each
camera shown, at most at the screen's rate: the inference thread only hands the result over.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Mapping, Protocol

import cv2
import numpy as np

from edgedetect import clock
from edgedetect.errors import DisplayError
from edgedetect.extensions import Hooks
from edgedetect.frames import Detection, Result
from edgedetect.pipeline.annotate import draw_label, label_size, palette, place_labels
from edgedetect.pipeline.stage import StageThread
from edgedetect.sinks.screens import Canvas, open_screen
from edgedetect.system import drm
from edgedetect.system.logs import RepeatedFailures

log = logging.getLogger("edgedetect.sinks.display")

BOX_ALPHA = 255
LABEL_ALPHA = 200
FIGURES_EVERY_S = 1.0  # the figures line on the screen is read at most this often


def draw_overlay(detections: list[Detection], size: tuple[int, int]) -> np.ndarray:
    """An RGBA image of `size` (width, height): boxes and labels opaque, the rest transparent."""
    w, h = size
    img = np.zeros((h, w, 4), np.uint8)
    thick = max(2, round(min(w, h) / 240))
    scale = max(0.5, min(w, h) / 900)
    boxes = [d.pixel_box(w, h) for d in detections]
    texts = [f"{d.label} {d.score:.0%}" for d in detections]
    for d, (x0, y0, x1, y1) in zip(detections, boxes):
        b, g, r = palette(d.class_id)
        cv2.rectangle(img, (x0, y0), (x1, y1), (r, g, b, BOX_ALPHA), thick)
    sizes = [label_size(t, scale, 1)[:2] for t in texts]
    for d, text, rect in zip(detections, texts, place_labels(sizes, [b[:2] for b in boxes], w, h)):
        b, g, r = palette(d.class_id)
        draw_label(img, text, rect, (r, g, b, LABEL_ALPHA), scale, 1, ink=(0, 0, 0, 255))
    return img


class Target(Protocol):
    """Where the monitor thread puts the newest results: the screen, or a camera's preview."""

    def show(self, fresh: dict[str, Result]) -> None: ...

    def close(self) -> None: ...


class Monitor(StageThread):
    """Shows the newest published result of each camera it shows, on its own thread, at most
    `hz` times a second. Results that come faster replace each other unseen; a failure to draw
    is logged (once, then summarised), counted, and the next result is tried."""

    def __init__(self, target: Target, cameras: tuple[str, ...], hz: float):
        super().__init__("monitor")
        self.target = target
        self.cameras = cameras
        self.period = 1.0 / max(1.0, hz)
        self._lock = threading.Lock()
        self._fresh: dict[str, Result] = {}
        self._new = threading.Event()
        self._ran = False
        self.shown = 0  # pictures put on the screen
        self.failures = 0
        self._failing = RepeatedFailures(log, "display")

    def on_result(self, result: Result) -> None:
        """On the inference thread: hand the result over, never wait."""
        if result.camera in self.cameras:
            with self._lock:
                self._fresh[result.camera] = result
                self._new.set()

    def figures(self) -> dict[str, int]:
        return {"shown": self.shown, "failures": self.failures}

    def start(self) -> None:
        self._ran = True
        super().start()

    def stop(self) -> None:
        super().stop()
        self._new.set()

    def join(self, timeout: float | None = None) -> None:
        if self._ran:
            super().join(timeout)
        else:  # attached, never started: the screen is still ours to give back
            self.target.close()

    def _run(self) -> None:
        due = 0.0
        try:
            while True:
                self._new.wait()
                wait = due - clock.now()
                if self._stop.is_set() or (wait > 0 and self._stop.wait(wait)):
                    return
                with self._lock:
                    fresh, self._fresh = self._fresh, {}
                    self._new.clear()
                due = clock.now() + self.period
                self._show(fresh)
        finally:
            self.target.close()

    def _show(self, fresh: dict[str, Result]) -> None:
        try:
            self.target.show(fresh)
        except Exception as e:  # noqa: BLE001 - a screen unplugged or taken must not end the thread
            self.failures += 1
            why = str(e) if isinstance(e, DisplayError) else f"display: drawing failed ({type(e).__name__}: {e})"
            self._failing.failed(why)
        else:
            self.shown += 1
            self._failing.succeeded()


class FiguresLine:
    """The short figures line drawn on each camera's picture: rate, inference time, temperature."""

    def __init__(self, figures: Callable[[], dict[str, Any]]):
        self._figures = figures
        self._snap: dict[str, Any] = {}
        self._t = -FIGURES_EVERY_S

    def __call__(self, camera: str) -> str:
        now = clock.now()
        if now - self._t >= FIGURES_EVERY_S:  # a snapshot reads /proc and sysfs: not per frame
            self._snap, self._t = self._figures(), now
        snap = self._snap
        cams = snap.get("cameras")
        own = cams.get(camera, {}) if isinstance(cams, dict) else snap
        parts = [camera] if isinstance(cams, dict) else []
        if "inference_fps" in own:
            parts.append(f"{own['inference_fps']:.1f} fps")
        ms = (snap.get("inference_ms") or {}).get("p50")
        if ms is not None:
            parts.append(f"{ms:.0f} ms")
        if "temperature_c" in snap:
            parts.append(f"{snap['temperature_c']:.0f} C")
        return "  ".join(parts)


class ScreenTarget:
    """The cameras' annotated frames on a canvas the size of the screen, then onto the screen."""

    def __init__(self, screen: Any, cameras: list[str], line: Callable[[str], str]):
        self.screen = screen
        self.canvas = Canvas(screen.layout.width, screen.layout.height, cameras)
        self._line = line

    def show(self, fresh: dict[str, Result]) -> None:
        for result in fresh.values():
            self.canvas.draw(result, self._line(result.camera))
        if fresh:
            self.screen.show(self.canvas.image)

    def close(self) -> None:
        self.screen.close()


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


class CameraOverlay:
    """The preview of one Pi camera with the boxes drawn over it. A camera reopened after a
    fault is a new Picamera2 object, opened with picamera2's null preview: the preview moves to
    it before its first overlay, and the closed object is never drawn on again."""

    def __init__(self, camera_name: str, current: Callable[[], Any], kind: Any, fallback: tuple[int, int]):
        self.name = camera_name
        self._current = current  # the camera's Picamera2 object now (None while it is closed)
        self._kind = kind
        self._fallback = fallback
        self.camera: Any = None  # the object the preview was last put on
        self._showing = False  # its preview started
        self.size = fallback

    def follow(self) -> Any:
        """The camera object to draw on, its preview started; None while there is none."""
        cam = self._current()
        if cam is None:
            return None
        if cam is not self.camera:
            self.camera, self._showing = cam, False
            try:
                start_preview(cam, self._kind)
            except Exception as e:  # noqa: BLE001 - no monitor, a desktop holding DRM, no Qt
                raise DisplayError(f"display: cannot start the camera's preview ({e})") from None
            self._showing = True
            self.size = preview_size(cam, self._fallback)
        return cam if self._showing else None

    def show(self, fresh: dict[str, Result]) -> None:
        result = fresh.get(self.name)
        if result is None:
            return
        cam = self.follow()
        if cam is not None:
            cam.set_overlay(draw_overlay(list(result.detections), self.size))

    def close(self) -> None:
        # The preview is left to the camera: picamera2's preview thread also completes the
        # capture requests, and stopping it while capture waits would hang the capture thread.
        # The camera's close() (capture thread, on its way out) stops it.
        if self.camera is not None and self._showing:
            try:
                self.camera.set_overlay(None)
            except Exception:  # noqa: BLE001 - the camera may already be closing
                pass


def _is_picam(source: Any) -> bool:
    from edgedetect.sources.picam import PiCamera

    return isinstance(source, PiCamera)


def shown_cameras(hooks: Hooks) -> list[str] | None:
    """The cameras the monitor shows; None (with a warning) when [display] camera names none."""
    names = list(hooks.sources)
    wanted = hooks.cfg.display.camera
    if not wanted:
        return names
    if wanted not in hooks.sources:
        log.warning("display.camera = %r: no such camera (expected one of %s); the monitor stays off",
                    wanted, ", ".join(names))
        return None
    return [wanted]


def choose_mode(mode: str, cameras: list[str], sources: Mapping[str, Any]) -> str:
    """`auto`: the camera's own preview for one Pi camera, the screen for everything else."""
    if mode != "auto":
        return mode
    return "drm" if len(cameras) == 1 and _is_picam(sources[cameras[0]]) else "kms"


def attach(hooks: Hooks, preview: Callable[[str], Any] = preview_kind) -> Monitor | None:
    cfg = hooks.cfg.display
    if cfg.mode == "none":
        return None
    cameras = shown_cameras(hooks)
    if cameras is None:
        return None
    sysfs_root = hooks.cfg.stats.sysfs_root
    if cfg.mode == "auto" and not drm.connected(sysfs_root):
        log.info("display: no monitor connected (display.mode = \"auto\"); the monitor stays off")
        return None
    mode = choose_mode(cfg.mode, cameras, hooks.sources)
    try:
        monitor = _kms_monitor(hooks, cameras) if mode == "kms" else _preview_monitor(hooks, cameras[0], mode, preview)
    except DisplayError as e:
        log.warning("%s; detection continues without the monitor", e)
        return None
    hooks.on_result(monitor.on_result)
    hooks.add_figures("display", monitor.figures)
    return monitor


def _kms_monitor(hooks: Hooks, cameras: list[str]) -> Monitor:
    screen = open_screen(hooks.cfg.display.device, hooks.cfg.stats.sysfs_root, hooks.cfg.stats.procfs_root)
    log.info("display: %s, %s", screen.describe(),
             f"{len(cameras)} cameras in a grid" if len(cameras) > 1 else f"camera {cameras[0]}")
    return Monitor(ScreenTarget(screen, cameras, FiguresLine(hooks.figures)), tuple(cameras), screen.hz)


def _preview_monitor(hooks: Hooks, name: str, mode: str, preview: Callable[[str], Any]) -> Monitor:
    source = hooks.sources[name]
    if _is_picam(source) and source.camera is None:
        raise DisplayError(f"display: camera {name!r}: the Pi camera is not open")
    if not _is_picam(source):
        raise DisplayError(f"display.mode = {mode!r} shows the Pi camera's own preview, and camera {name!r} is "
                           f"{getattr(source, 'name', '?')!r}: set [display] mode = \"kms\" (or \"auto\") to see "
                           "any source on the monitor")
    sources = hooks.sources
    overlay = CameraOverlay(name, lambda: getattr(sources.get(name), "camera", None), preview(mode), source.size)
    overlay.follow()  # at start-up, so that a monitor that cannot show it is said at once
    log.info("display: %s preview of camera %s, overlay %dx%d", mode, name, *overlay.size)
    return Monitor(overlay, (name,), drm.DEFAULT_HZ)
