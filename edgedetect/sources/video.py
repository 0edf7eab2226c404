"""Sources OpenCV opens: video files and V4L2/USB cameras (network streams: stream.py)."""

from __future__ import annotations

import grp
import logging
import os
import pwd
import threading
from pathlib import Path

import cv2

from edgedetect.errors import SourceError
from edgedetect.sources.base import Capture
from edgedetect.sources.pacing import Pacer

log = logging.getLogger("edgedetect.sources")

VIDEO_GROUP = "video"
OPENCV_LOG_ERROR = 2  # cv2.setLogLevel: 0 silent, 1 fatal, 2 error, 3 warning (its default)


def video_devices(dev_root: str | Path = "/dev") -> list[Path]:
    """The V4L2 device nodes, /dev/video0 before /dev/video10."""
    found = Path(dev_root).glob("video*")
    return sorted((p for p in found if p.name[5:].isdigit()), key=lambda p: int(p.name[5:]))


def camera_hint(dev_root: str | Path = "/dev") -> str:
    """What a user whose camera does not open needs to know: which devices there are, and
    whether this user may open them (the video group)."""
    found = video_devices(dev_root)
    if not found:
        return f"no {dev_root}/video* device: plug the camera in ('lsusb' lists USB devices)"
    user = pwd.getpwuid(os.getuid()).pw_name
    try:
        gid = grp.getgrnam(VIDEO_GROUP).gr_gid
    except KeyError:
        member = True  # no such group here: the devices' own modes decide
    else:
        member = os.getuid() == 0 or gid in os.getgroups()
    where = f"devices: {', '.join(map(str, found))}"
    if member:
        return f"{where}; user {user} is in the {VIDEO_GROUP} group"
    return (f"{where}; user {user} is not in the {VIDEO_GROUP} group: sudo usermod -aG {VIDEO_GROUP} {user}, "
            "then log in again")


def quiet_opencv() -> None:
    """OpenCV's own [ WARN ] lines (a camera index that does not open, select() timeouts) go to
    stderr beside ours and say less: keep its errors only, unless OPENCV_LOG_LEVEL or --debug
    asks for more."""
    if "OPENCV_LOG_LEVEL" not in os.environ and not logging.getLogger("edgedetect").isEnabledFor(logging.DEBUG):
        cv2.setLogLevel(OPENCV_LOG_ERROR)


class VideoFile:
    live = False

    def __init__(self, path: str | Path, pace: bool = True, loop: bool = False):
        self.path = Path(path)
        self.name = str(path)
        self.pace = pace
        self.loop = loop
        self._cap: cv2.VideoCapture | None = None
        self._stop = threading.Event()  # kept across the reopen of a loop
        self._pacer = Pacer(None, self._stop)
        self._fps: float | None = None

    @property
    def fps(self) -> float | None:
        return self._fps

    def open(self) -> None:
        if not self.path.exists() or self.path.is_dir():  # a FIFO is fine: recorders write into them
            raise SourceError(f"{self.path}: video file not found")
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            raise SourceError(f"{self.path}: cannot open as video (expected a format FFmpeg reads)")
        fps = cap.get(cv2.CAP_PROP_FPS)
        self._fps = fps if 0 < fps < 1000 else 25.0
        self._cap = cap
        self._pacer = Pacer(self._fps if self.pace else None, self._stop)

    def read(self) -> Capture | None:
        assert self._cap is not None, "open() first"
        if self._stop.is_set():
            return None
        ok, img = self._cap.read()
        if not ok and self.loop:
            # Reopen rather than seek: the file may have been replaced or cut short meanwhile.
            self._cap.release()
            self.open()
            ok, img = self._cap.read()
            if not ok:
                raise SourceError(f"{self.path}: no frame after reopening (file empty or corrupt)")
        if not ok:
            return None
        self._pacer.wait()
        return Capture(img)

    def interrupt(self) -> None:
        self._pacer.interrupt()

    def close(self) -> None:
        self._pacer.interrupt()
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class LiveCapture:
    """A V4L2 camera (`0`, `/dev/video0`) through OpenCV."""

    live = True

    def __init__(self, uri: str, width: int = 1280, height: int = 720, fps: float = 30.0):
        self.uri = uri
        self.name = uri
        self.width, self.height, self.req_fps = width, height, fps
        self._cap: cv2.VideoCapture | None = None
        self._fps: float | None = None
        self._size: tuple[int, int] | None = None
        self._stopped = False

    @property
    def fps(self) -> float | None:
        return self._fps

    def open(self) -> None:
        dev = int(self.uri) if self.uri.isdigit() else self.uri
        quiet_opencv()
        if isinstance(dev, str) and not Path(dev).exists():
            raise SourceError(f"{dev}: camera device not found ({camera_hint()})")
        cap = cv2.VideoCapture(dev, cv2.CAP_V4L2)
        if not cap.isOpened():
            raise SourceError(f"{self.uri}: cannot open the camera ({camera_hint()})")
        # USB cameras deliver far higher rates as MJPEG than as raw YUYV over USB 2.
        cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*"MJPG"))
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        cap.set(cv2.CAP_PROP_FPS, self.req_fps)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        fps = cap.get(cv2.CAP_PROP_FPS)
        self._fps = fps if 0 < fps < 1000 else None
        self._cap = cap

    def read(self) -> Capture | None:
        assert self._cap is not None, "open() first"
        ok, img = self._cap.read()
        if self._stopped:
            return None
        if not ok or img is None:
            raise SourceError(f"{self.uri}: no frame (camera unplugged or stream stopped)")
        h, w = img.shape[:2]
        if self._size is not None and self._size != (w, h):
            log.info("%s: picture size changed from %dx%d to %dx%d", self.uri, *self._size, w, h)
        self._size = (w, h)
        return Capture(img)

    def interrupt(self) -> None:
        """A read blocked in OpenCV cannot be cut short (it ends at the stream's read timeout);
        whatever it returns then is dropped."""
        self._stopped = True

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
