"""The monitor overlay: pixels where the boxes are, transparent elsewhere; and the attach path
against a Picamera2-like fake (a contract test of the calls made, not of real hardware)."""

from __future__ import annotations

import dataclasses
import logging
from types import SimpleNamespace

import numpy as np
from fakehooks import make_hooks

from edgedetect.config import Config
from edgedetect.pipeline.annotate import colour_for
from edgedetect.frames import Detection, Frame, Result
from edgedetect.pipeline.publish import Publisher
from edgedetect.pipeline.stats import CameraStats
from edgedetect.sinks import display
from edgedetect.sources.picam import PiCamera

DOG = Detection(17, "dog", 0.93, (0.25, 0.5, 0.75, 0.9))  # x 160..480, y 240..432 at 640x480


def test_overlay_has_box_edges_in_class_colour_and_is_transparent_elsewhere() -> None:
    img = display.draw_overlay([DOG], (640, 480))
    assert img.shape == (480, 640, 4) and img.dtype == np.uint8
    b, g, r = colour_for(17)
    # Left, right and bottom edges, away from the label: opaque, in the class colour (RGBA order).
    for y, x in [(330, 160), (330, 480), (432, 300)]:
        assert tuple(img[y, x]) == (r, g, b, 255), (y, x, img[y, x])
    # Inside the box, below the label, and outside the box: fully transparent.
    for y, x in [(380, 320), (100, 100), (470, 630), (330, 100)]:
        assert img[y, x, 3] == 0, (y, x)
    # The label sits at the top-left corner of the box, half-transparent background.
    assert img[236, 165, 3] in (display.LABEL_ALPHA, 255)


def test_overlay_empty_without_detections() -> None:
    assert not display.draw_overlay([], (320, 240)).any()


class FakePicamera2:
    """The Picamera2 methods the display uses, recording the calls."""

    def __init__(self, fail_preview: bool = False) -> None:
        self.calls: list[tuple] = []
        self.camera_config = {"main": {"size": (1280, 720)}}
        self.overlays: list[np.ndarray | None] = []
        self.preview: object = "null"  # PiCamera.open() started it with the null preview
        self.fail_preview = fail_preview

    def stop_preview(self) -> None:
        self.calls.append(("stop_preview",))
        if self.preview is None:
            raise RuntimeError("No preview specified.")
        self.preview = None

    def start_preview(self, kind: object = False) -> None:
        self.calls.append(("start_preview", kind))
        if self.preview is not None:
            raise RuntimeError("An event loop is already running")
        if self.fail_preview and kind is not False:
            raise RuntimeError("Failed to open DRM device")
        self.preview = kind

    def set_overlay(self, overlay: np.ndarray | None) -> None:
        self.overlays.append(overlay)


def fake_daemon(mode: str, source: object, uri: str = "picam"):
    """Hooks as the daemon gives them, with a real publisher behind on_result."""
    cfg = Config()
    cfg.display.mode, cfg.source.uri = mode, uri
    publisher = Publisher(CameraStats())
    hooks, _ = make_hooks(cfg, source=source)
    hooks = dataclasses.replace(hooks, on_result=publisher.add_listener)
    return SimpleNamespace(hooks=hooks, publisher=publisher)


def picam_with(camera: FakePicamera2) -> PiCamera:
    src = PiCamera(1280, 720, camera_factory=lambda: camera)
    src.camera = camera  # as after open()
    return src


def test_attach_swaps_preview_and_draws_each_result() -> None:
    cam = FakePicamera2()
    d = fake_daemon("drm", picam_with(cam))
    ext = display.attach(d.hooks, preview=lambda mode: f"Preview.{mode.upper()}")
    assert ext is not None
    assert cam.calls == [("stop_preview",), ("start_preview", "Preview.DRM")]
    ext.start()
    frame = Frame(0, 0.0, np.zeros((720, 1280, 3), np.uint8), camera="camera")
    d.publisher.publish(Result(Frame(0, 0.0, frame.image, camera="other"), [DOG]))
    assert cam.overlays == []  # another camera's result is not this overlay's
    d.publisher.publish(Result(frame, [DOG]))
    assert len(cam.overlays) == 1
    ov = cam.overlays[0]
    assert ov.shape == (720, 1280, 4)
    b, g, r = colour_for(17)
    assert tuple(ov[550, 320]) == (r, g, b, 255)  # left edge at x = 0.25 * 1280
    ext.stop()
    assert cam.overlays[-1] is None  # overlay cleared; the preview is left to camera.close()
    assert ("stop_preview",) not in cam.calls[2:]
    d.publisher.publish(Result(frame, [DOG]))
    assert len(cam.overlays) == 2  # no drawing after stop


def test_attach_restores_null_preview_when_the_monitor_fails(caplog) -> None:
    cam = FakePicamera2(fail_preview=True)
    d = fake_daemon("drm", picam_with(cam))
    with caplog.at_level(logging.WARNING):
        assert display.attach(d.hooks, preview=lambda mode: "Preview.DRM") is None
    assert cam.preview is False  # the camera still has an event loop to complete captures
    assert "cannot start the preview (Failed to open DRM device)" in caplog.text


def test_attach_off_and_non_picam_sources(caplog) -> None:
    assert display.attach(fake_daemon("none", object()).hooks) is None
    with caplog.at_level(logging.WARNING):
        assert display.attach(fake_daemon("qt", object(), uri="/dev/video0").hooks) is None
    assert "display.mode = 'qt' needs the Pi camera" in caplog.text
    assert "'/dev/video0'" in caplog.text and "viewer page" in caplog.text
