"""Sources behind one interface: files paced or not, images, cameras through their contracts."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from conftest import MEDIA, VTEST
from edgedetect.config import SourceConfig
from edgedetect.errors import SourceError
from edgedetect.sources import describe_uri, make_source, open_source
from edgedetect.sources.images import ImageFiles
from edgedetect.sources.mjpeg import MjpegStream
from edgedetect.sources.picam import PiCamera, lores_size_for
from edgedetect.sources.stream import NetworkStream
from edgedetect.sources.video import LiveCapture, VideoFile


def test_describe_uri(tmp_path):
    assert describe_uri("picam") == "picam"
    assert describe_uri("demo") == "demo"
    assert describe_uri("0") == "camera" and describe_uri("/dev/video2") == "camera"
    assert describe_uri("rtsp://cam/stream") == "stream" and describe_uri("http://x/mjpg") == "stream"
    assert describe_uri(str(tmp_path)) == "images" and describe_uri("a.JPG") == "images"
    assert describe_uri(str(VTEST)) == "video"


@pytest.mark.parametrize("uri, kind", [
    ("rtsp://cam/main", NetworkStream), ("udp://127.0.0.1:5000", NetworkStream), ("tcp://cam:8554", NetworkStream),
    ("http://cam/video", MjpegStream), ("0", LiveCapture), ("/dev/video0", LiveCapture)])
@pytest.mark.parametrize("record", [False, True])
def test_each_camera_uri_gets_its_reader_and_the_record_choice(uri, kind, record):
    """Built, not opened: which class reads a camera URI, and whether it hands its packets on."""
    src = make_source(SourceConfig(uri=uri), record=record)
    assert type(src) is kind
    if kind is not LiveCapture:  # a V4L2 camera gives no compressed video of its own
        assert src.record is record


def test_video_unpaced_reads_all_frames_fast():
    src = VideoFile(VTEST, pace=False)
    src.open()
    assert src.fps == pytest.approx(10.0)
    t0 = time.monotonic()
    n = 0
    while (cap := src.read()) is not None:
        n += 1
        assert cap.image.shape == (576, 768, 3)
    src.close()
    assert n == 795
    assert time.monotonic() - t0 < 30  # far faster than the 79.5 s it lasts


def test_video_paced_at_its_own_rate():
    src = VideoFile(VTEST, pace=True)
    src.open()
    t0 = time.monotonic()
    for _ in range(21):
        src.read()
    elapsed = time.monotonic() - t0
    src.close()
    assert 1.8 <= elapsed <= 3.0  # 20 periods of 100 ms


def test_video_loop():
    path = MEDIA / "vtest.avi"
    src = VideoFile(path, pace=False, loop=True)
    src.open()
    for _ in range(800):
        assert src.read() is not None
    src.close()


def test_demo_resolves_from_catalogue():
    src = make_source(SourceConfig(uri="demo", pace=False))
    assert isinstance(src, VideoFile) and src.loop and src.path.name == "vtest.avi"


def test_images_folder(tmp_path):
    for name in ("pets.jpg", "grace_hopper.bmp"):
        (tmp_path / name).write_bytes((MEDIA / name).read_bytes())
    (tmp_path / "notes.txt").write_text("not an image")
    src = ImageFiles(tmp_path, pace=False)
    src.open()
    shapes = [src.read().image.shape for _ in range(2)]
    assert shapes == [(600, 512, 3), (430, 512, 3)]  # sorted by name
    assert src.read() is None


def test_missing_sources_are_one_line_errors(tmp_path):
    with pytest.raises(SourceError, match="source not found"):
        make_source(SourceConfig(uri=str(tmp_path / "missing.mp4")))
    with pytest.raises(SourceError, match="no images in folder"):
        open_source(SourceConfig(uri=str(tmp_path)))
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 100)
    with pytest.raises(SourceError, match="cannot open as video"):
        open_source(SourceConfig(uri=str(bad)))
    with pytest.raises(SourceError, match="/dev/video97: camera device not found"):
        LiveCapture("/dev/video97").open()


# --- picamera2, through its contract -------------------------------------------------------

class FakeRequest:
    def __init__(self, cam: "FakePicamera2"):
        self.cam = cam

    def make_array(self, stream: str) -> np.ndarray:
        cfg = self.cam.configured[stream]
        w, h = cfg["size"]
        if stream == "main":
            img = np.zeros((h, w, 4), np.uint8)  # RGB888 arrives as XBGR8888-padded rows on some builds
            img[:, : w // 2, 0] = 255  # blue left half in B,G,R order
            return img
        yuv = np.full((h * 3 // 2, w), 128, np.uint8)
        yuv[:h] = 200  # bright grey
        return yuv

    def release(self) -> None:
        self.cam.released += 1


class FakePicamera2:
    """The slice of Picamera2's API the source uses, with the shapes it really returns."""

    def __init__(self):
        self.configured = {}
        self.started = self.closed = False
        self.released = 0
        self.controls = None

    def create_preview_configuration(self, main, lores=None, buffer_count=4, controls=None, queue=True):
        self.controls = controls
        return {"main": main, "lores": lores}

    def configure(self, config):
        self.configured = config

    def start(self):
        self.started = True

    def capture_request(self, wait=None):
        return FakeRequest(self)

    def stop(self):
        self.started = False

    def close(self):
        self.closed = True


def test_picam_adapter_main_and_lores():
    cam = FakePicamera2()
    src = PiCamera(640, 480, 15, lores=lores_size_for((300, 300)), camera_factory=lambda: cam)
    src.open()
    assert cam.configured["main"] == {"size": (640, 480), "format": "RGB888"}
    assert cam.configured["lores"] == {"size": (320, 300), "format": "YUV420"}
    assert cam.controls == {"FrameRate": 15.0}
    cap = src.read()
    assert cam.released == 1  # the buffer went back to libcamera
    assert cap.image.shape == (480, 640, 3) and cap.image.flags["C_CONTIGUOUS"]
    assert tuple(cap.image[0, 0]) == (255, 0, 0)  # B,G,R: blue stays blue for OpenCV
    assert cap.lores.shape == (300, 320, 3)
    assert np.abs(cap.lores.astype(int) - 200).max() <= 1  # full-range grey stays 200 on all channels
    src.close()
    assert cam.closed and not cam.started


def test_lores_width_is_row_aligned():
    assert lores_size_for((300, 300)) == (320, 300)
    assert lores_size_for((224, 224)) == (256, 224)
    # a letterboxing model (YOLO 640) on a 1280x720 camera: the frame's 16:9 kept, not squashed
    assert lores_size_for((640, 640), (1280, 720)) == (640, 360)
    assert lores_size_for((320, 320), (1640, 1232)) == (320, 240)
    assert lores_size_for((320, 320)) == (320, 320)


def test_picam_without_picamera2_is_a_clear_error():
    try:
        import picamera2  # noqa: F401
        pytest.skip("picamera2 is importable here")
    except ImportError:
        pass
    with pytest.raises(SourceError, match="python3-picamera2"):
        PiCamera().open()


def test_lores_feeds_the_model_without_bgr_swap(detector):
    """A lores RGB frame and the BGR main frame of the same scene give the same detections."""
    img = cv2.imread(str(MEDIA / "pets.jpg"))
    from edgedetect.frames import Frame
    from edgedetect.detect.model import DetectFilter
    from edgedetect.pipeline.worker import infer

    rgb_small = cv2.cvtColor(cv2.resize(img, (320, 300)), cv2.COLOR_BGR2RGB)
    a = infer(detector, Frame(0, 0.0, img), DetectFilter(), 3).detections
    b = infer(detector, Frame(0, 0.0, img, rgb_small), DetectFilter(), 3).detections
    assert [d.label for d in a] == [d.label for d in b] == ["dog", "dog"]
    assert all(abs(x.score - y.score) < 0.05 for x, y in zip(a, b))


def test_camera_hint_lists_the_devices_and_the_video_group(tmp_path):
    """What `--source 0` says when the camera does not open: the devices there are, and whether
    this user may open them."""
    import grp
    import os
    import pwd

    from edgedetect.sources.video import camera_hint

    assert camera_hint(tmp_path) == f"no {tmp_path}/video* device: plug the camera in ('lsusb' lists USB devices)"
    for name in ("video10", "video0", "videoX"):
        (tmp_path / name).write_bytes(b"")
    user = pwd.getpwuid(os.getuid()).pw_name
    try:
        member = os.getuid() == 0 or grp.getgrnam("video").gr_gid in os.getgroups()
    except KeyError:
        member = True
    said = "is in the video group" if member else f"is not in the video group: sudo usermod -aG video {user}"
    assert camera_hint(tmp_path).startswith(f"devices: {tmp_path}/video0, {tmp_path}/video10; user {user} {said}")
