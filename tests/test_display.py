"""The local monitor. The screen path end to end: the daemon draws into a fake framebuffer (a
plain file of the screen's size, its geometry in a fake sysfs), and the file is read back and
searched for the frame and its boxes, for a file source and for an MJPEG camera. The KMS
arithmetic without hardware; the drawing thread; labels kept inside the frame and apart; the Pi
camera's preview overlay following a reopened camera (tests/fake_picamera2.py)."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import COCO_LABELS, DETECTOR, MEDIA
from daemonproc import DaemonProcess
from fake_picamera2 import Rig
from fakehooks import make_hooks
from mjpegserver import MjpegCamera

from edgedetect import doctor
from edgedetect.config import ONE_CAMERA, Config
from edgedetect.detect.preprocess import letterbox_geometry
from edgedetect.frames import Detection, Frame, Result
from edgedetect.pipeline import capture
from edgedetect.pipeline.annotate import colour_for, palette, place_labels
from edgedetect.pipeline.builder import Pipeline, PipelineOptions
from edgedetect.pipeline.camera import CameraSpec
from edgedetect.sinks import display, screens
from edgedetect.sources.picam import PiCamera

DOG = Detection(17, "dog", 0.93, (0.25, 0.5, 0.75, 0.9))  # x 160..480, y 240..432 at 640x480
SCREEN = (640, 360)
STRIDE = 640 * 4 + 128  # rows padded past the visible width, as DRM and fbdev may do


def fake_screen(root: Path, connector: str = "", bpp: int = 32, stride: int = STRIDE) -> tuple[Path, Path]:
    """(sysfs root, framebuffer file): fb0's geometry in sysfs, and a file of exactly its size."""
    sysfs = root / "sys"
    g = sysfs / "class/graphics/fb0"
    g.mkdir(parents=True)
    (g / "virtual_size").write_text(f"{SCREEN[0]},{SCREEN[1]}\n")
    (g / "bits_per_pixel").write_text(f"{bpp}\n")
    (g / "stride").write_text(f"{stride}\n")
    if connector:  # a card that does not exist here: no DRM master to ask
        c = sysfs / "class/drm" / connector
        c.mkdir(parents=True)
        (c / "status").write_text("connected\n")
        (c / "modes").write_text("1920x1080\n1280x720\n")
    fb = root / "fb0"
    fb.write_bytes(bytes(stride * SCREEN[1]))
    return sysfs, fb


def screen_pixels(fb: Path, stride: int = STRIDE) -> np.ndarray:
    """The fake framebuffer read back as BGR (XRGB8888 in memory: B, G, R, X)."""
    rows = np.frombuffer(fb.read_bytes(), np.uint8).reshape(SCREEN[1], stride)
    return rows[:, :SCREEN[0] * 4].reshape(SCREEN[1], SCREEN[0], 4)[:, :, :3]


def assert_frame_with_boxes(fb: Path, image: np.ndarray, detections: list[dict]) -> None:
    """The screen holds `image` letterboxed, bars black, and each detection's box in its colour."""
    px = screen_pixels(fb)
    fh, fw = image.shape[:2]
    dw, dh, left, top = letterbox_geometry(fw, fh, *SCREEN)
    bars = np.concatenate([px[:, :left].reshape(-1, 3), px[:, left + dw:].reshape(-1, 3),
                           px[:top].reshape(-1, 3), px[top + dh:].reshape(-1, 3)])
    assert not bars.any(), "the letterbox bars are not black"
    region = px[top:top + dh, left:left + dw].astype(int)
    expected = cv2.resize(image, (dw, dh), interpolation=cv2.INTER_LINEAR).astype(int)
    assert np.median(np.abs(region - expected)) <= 3, "the picture on the screen is not the frame"
    assert detections, "no detections to look for"
    found = []  # per box: the share of its left edge's rows where the screen has the box's colour
    for d in detections:
        x0, y0, x1, y1 = d["box"]
        colour = np.array(palette(d["class_id"]))
        lx = round(x0 / fw * dw)
        rows = range(round((y0 + (y1 - y0) * 0.4) / fh * dh), round((y0 + (y1 - y0) * 0.9) / fh * dh))
        hits = sum(bool((region[y, max(0, lx - 1):lx + 2] == colour).all(axis=1).any()) for y in rows)
        found.append(hits / max(1, len(rows)))
    # Where people stand close, another box's label may cover part of an edge; never most of it.
    assert min(found) >= 0.5 and sum(found) / len(found) >= 0.8, list(zip(detections, found))


@pytest.mark.slow
@pytest.mark.parametrize("source", ["file", "mjpeg"])
def test_framebuffer_shows_the_annotated_frame(tmp_path: Path, source: str) -> None:
    """kms mode (no kms++ here, so the framebuffer) for an image file; auto mode for an MJPEG
    camera with a monitor connected: auto chooses the screen for anything but the Pi camera."""
    image_path = MEDIA / ("pets.jpg" if source == "file" else "kite_and_cold.jpg")
    sysfs, fb = fake_screen(tmp_path, connector="card97-HDMI-A-1" if source == "mjpeg" else "")
    cam = MjpegCamera(image_path, frames=1).start() if source == "mjpeg" else None
    uri = cam.url if cam else str(image_path)
    cfg = tmp_path / "edgedetect.toml"
    cfg.write_text(f'[source]\nuri = "{uri}"\nloop = true\n[model]\npath = "{DETECTOR}"\nlabels = "{COCO_LABELS}"\n'
                   f'[display]\nmode = "{"kms" if source == "file" else "auto"}"\ndevice = "{fb}"\n'
                   f'[stats]\nsysfs_root = "{sysfs}"\n[http]\nport = 0\n')
    try:
        with DaemonProcess("run", "--config", str(cfg)) as d:
            dets = d.wait_for(lambda: d.json("/api/detections")["detections"])
            d.wait_for(lambda: d.json("/api/stats").get("display", {}).get("shown", 0) >= 2)
            assert_frame_with_boxes(fb, cv2.imread(str(image_path)), dets)
            code, _ = d.terminate()
    finally:
        if cam:
            cam.stop()
    assert code == 0
    assert f"display: framebuffer {fb} 640x360 XR24, camera camera" in d.output()
    assert "Traceback" not in d.output()


def test_screen_arithmetic_without_hardware() -> None:
    """What the KMS and framebuffer paths compute: rows padded to the stride, each pixel format's
    bytes, the letterbox, the grid, and the plane's 16.16 source size."""
    canvas = np.zeros((2, 3, 3), np.uint8)
    canvas[0, 0] = (10, 20, 30)  # B, G, R
    canvas[1, 2] = (255, 255, 255)
    for fourcc, first, bpp in (("XR24", [10, 20, 30, 255], 4), ("RG24", [10, 20, 30], 3),
                               ("RG16", list(((30 >> 3) << 11 | (20 >> 2) << 5 | 10 >> 3).to_bytes(2, "little")), 2)):
        lay = screens.Layout(3, 2, 3 * bpp + 5, fourcc)
        buf = bytearray(b"\x77" * lay.nbytes)
        lay.write(canvas, buf)
        assert list(buf[:bpp]) == first, fourcc
        assert buf[3 * bpp:3 * bpp + 5] == b"\x77" * 5, f"{fourcc}: padding written"
        assert all(b == 255 for b in buf[lay.stride + 2 * bpp:lay.stride + 3 * bpp]), fourcc
    with pytest.raises(screens.DisplayError, match="does not fit a stride of 11 bytes"):
        screens.Layout(3, 2, 11, "XR24")
    assert screens.FB_FORMATS[16] == "RG16" and screens.FB_FORMATS[32] == "XR24"
    assert screens.plane_properties(7, 9, 1920, 1080)["SRC_W"] == 1920 * 65536
    assert screens.grid(3, 1920, 1080) == [(0, 0, 960, 540), (960, 0, 960, 540), (0, 540, 960, 540)]
    c = screens.Canvas(640, 360, ["a", "b"])  # two tiles of 320x360: a 4:3 frame is 320x240, centred
    c.draw(Result(Frame(0, 0.0, np.full((480, 640, 3), 200, np.uint8), camera="b"), [DOG]))
    assert c.image[60:300, 320:640].mean() > 150 and not c.image[:60, 320:].any() and not c.image[:, :320].any()
    b, g, r = palette(17)
    assert tuple(c.image[60 + 180, 320 + 80]) == (b, g, r)  # the dog's left edge at x 0.25, y 0.75


def test_monitor_draws_the_newest_result_and_never_holds_up_inference() -> None:
    release, entered = threading.Event(), threading.Event()
    shown: list[list[int]] = []

    class Slow:
        def show(self, fresh: dict[str, Result]) -> None:
            shown.append([r.frame.index for r in fresh.values()])
            entered.set()
            release.wait(5)

        def close(self) -> None:
            shown.append([-1])

    m = display.Monitor(Slow(), ("camera",), hz=1000.0)
    m.start()
    img = np.zeros((4, 4, 3), np.uint8)
    m.on_result(Result(Frame(0, 0.0, img, camera="camera")))
    assert entered.wait(5)
    for i in range(1, 101):  # the screen is stuck: each call only hands the result over
        m.on_result(Result(Frame(i, 0.0, img, camera="camera")))
    m.on_result(Result(Frame(500, 0.0, img, camera="other")))  # not a camera this monitor shows
    release.set()
    deadline = time.monotonic() + 5
    while len(shown) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    m.stop()
    m.join(5)
    assert shown == [[0], [100], [-1]]  # the newest result only, then the screen given back
    assert m.figures() == {"shown": 2, "failures": 0}


def test_screen_errors_are_one_line_and_auto_waits_for_a_monitor(tmp_path: Path, caplog) -> None:
    sysfs, fb = fake_screen(tmp_path)
    cases = {
        str(tmp_path / "fb7"): f"display: {tmp_path}/fb7: no such framebuffer device",
        "/dev/dri/card97": "display: device /dev/dri/card97: DRM/KMS needs the kms++ Python bindings: sudo apt "
                           "install python3-kms++",
    }
    (sysfs / "class/graphics/fb7").mkdir()
    for name in ("virtual_size", "bits_per_pixel", "stride"):
        (sysfs / "class/graphics/fb7" / name).write_text((sysfs / "class/graphics/fb0" / name).read_text())
    for device, line in cases.items():
        cfg = Config()
        cfg.display.mode, cfg.display.device, cfg.stats.sysfs_root = "kms", device, str(sysfs)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="edgedetect.sinks.display"):
            assert display.attach(make_hooks(cfg, source=object())[0]) is None
        [rec] = caplog.records
        assert rec.levelno == logging.WARNING and rec.getMessage().startswith(line), rec.getMessage()
        assert rec.getMessage().endswith("; detection continues without the monitor")
    # The Pi camera's preview cannot start (a desktop holds the screen): back to the null
    # preview, which completes the camera's captures, and one line.
    rig = Rig()
    cam = PiCamera(160, 120, 100.0, lores=None, camera_factory=rig.factory)
    cam.open()
    real_start = cam.camera.start_preview

    def refuse(kind=None):
        if kind:
            raise RuntimeError("Failed to open DRM device")
        real_start(kind)

    cam.camera.start_preview = refuse
    cfg = Config()
    cfg.display.mode = "drm"
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="edgedetect.sinks.display"):
        assert display.attach(make_hooks(cfg, source=cam)[0], preview=lambda mode: "Preview.DRM") is None
    assert cam.camera.preview is False
    assert [r.getMessage() for r in caplog.records] == [
        "display: cannot start the camera's preview (Failed to open DRM device); detection continues without "
        "the monitor"]
    cam.close()
    rig.teardown()
    cfg = Config()
    cfg.display.mode, cfg.display.device, cfg.stats.sysfs_root = "auto", str(fb), str(sysfs)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="edgedetect.sinks.display"):
        assert display.attach(make_hooks(cfg, source=object())[0]) is None
    assert [r.getMessage() for r in caplog.records] == [
        'display: no monitor connected (display.mode = "auto"); the monitor stays off']
    assert not fb.read_bytes().strip(b"\0")  # nothing drawn


def test_doctor_reports_the_display(tmp_path: Path) -> None:
    sysfs, fb = fake_screen(tmp_path, connector="card97-HDMI-A-1")
    cfg = Config()
    cfg.source.uri = "demo"
    cfg.display.device, cfg.stats.sysfs_root = str(fb), str(sysfs)
    env = doctor.Env(dev_root=tmp_path)
    assert doctor.check_display(cfg, env).line() == 'ok   display: off ([display] mode = "none"; "auto" shows ' \
                                                    'the stream on a monitor)'
    cfg.display.mode = "auto"
    assert doctor.check_display(cfg, env).line() == (
        f"ok   display: kms: framebuffer {fb} 640x360 32 bpp; HDMI-A-1 connected, 1920x1080; no other DRM master")
    cfg.display.mode = "drm"
    assert doctor.check_display(cfg, env).line() == (
        "FAIL display: mode drm shows the Pi camera's own preview, and the source is not the Pi camera -> "
        'set [display] mode = "kms" (or "auto") to see any source')
    (sysfs / "class/drm/card97-HDMI-A-1/status").write_text("disconnected\n")
    cfg.display.mode = "kms"
    assert doctor.check_display(cfg, env).line() == (
        f"FAIL display: framebuffer {fb} 640x360 32 bpp: no monitor connected -> plug in the HDMI cable "
        "(HDMI 0, next to the power socket, on a Pi 4)")


def test_labels_stay_inside_the_frame_and_apart() -> None:
    """People in a group: boxes whose top-left corners nearly meet, at the right edge and at the
    top of the frame. Each label is inside the frame and covers no other."""
    w, h = 320, 240
    sizes = [(90, 20)] * 5
    anchors = [(300, 0), (302, 4), (298, 8), (10, 100), (12, 104)]
    rects = place_labels(sizes, anchors, w, h)
    for x0, y0, x1, y1 in rects:
        assert 0 <= x0 and x1 <= w and 0 <= y0 and y1 <= h, (x0, y0, x1, y1)
    for i, a in enumerate(rects):
        for b in rects[i + 1:]:
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]), (a, b)
    # The overlay drawn for the Pi camera's preview places its labels the same way.
    group = [Detection(0, "person", 0.9 - i / 100, (0.9, 0.02 * i, 1.0, 0.9)) for i in range(3)]
    ov = display.draw_overlay(group, (w, h))
    assert ov[:, :, 3].any() and not ov[:, w - 1:, 3].all()


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
    assert not display.draw_overlay([], (320, 240)).any()


@pytest.mark.slow
def test_preview_overlay_follows_a_reopened_camera(detector, tmp_path: Path, monkeypatch) -> None:
    """auto on the Pi camera: its preview with the overlay. The camera stops delivering until a
    new Picamera2 object opens it; the overlay then goes to the new object, whose null preview
    was swapped for the monitor's, and never again to the closed one."""
    monkeypatch.setattr(capture, "BACKOFF_START_S", 0.05)
    rig = Rig()
    sysfs, _ = fake_screen(tmp_path, connector="card97-HDMI-A-1")

    def make_source() -> PiCamera:
        return PiCamera(160, 120, 100.0, lores=None, camera_factory=rig.factory, capture_timeout=0.3)

    first = make_source()
    first.open()
    p = Pipeline(detector, [CameraSpec(ONE_CAMERA, make_source, first)], PipelineOptions(stats_interval=3600))
    cfg = Config()
    cfg.display.mode, cfg.stats.sysfs_root = "auto", str(sysfs)
    hooks = dataclasses.replace(make_hooks(cfg)[0], sources=p.sources, on_result=p.add_result_listener)
    ext = display.attach(hooks, preview=lambda mode: f"Preview.{mode.upper()}")
    assert ext is not None
    old = first.camera
    assert old.preview == "Preview.DRM"

    def wait_for(cond, what: str) -> None:
        deadline = time.monotonic() + 10
        while not cond():
            assert time.monotonic() < deadline, what
            time.sleep(0.01)

    p.start()
    ext.start()
    try:
        wait_for(lambda: len(old.overlays) >= 3, "overlays on the first camera")
        rig.frontend_timeout(cleared_by="reopen")
        wait_for(lambda: p.camera().stats.camera_reopens >= 1, "a new camera object")
        new = p.sources[ONE_CAMERA].camera
        wait_for(lambda: len(new.overlays) >= 3, "overlays on the reopened camera")
        stale = len(old.overlays)
        wait_for(lambda: len(new.overlays) >= 6, "more overlays on the reopened camera")
    finally:
        ext.stop()
        p.stop()
        ext.join(3)
        p.join(3)
        rig.teardown()
    assert new is not old and not old.is_open
    assert len(old.overlays) == stale  # nothing drawn on the closed object after the reopen
    assert all(o is not None and o.shape == (120, 160, 4) for o in new.overlays[:-1])
    assert new.overlays[-1] is None  # the overlay cleared at stop; the preview left to the camera
    names = rig.names()
    assert names.index("preview:Preview.DRM#2") > names.index("open#2")
