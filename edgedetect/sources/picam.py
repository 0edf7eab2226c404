"""The Raspberry Pi camera through picamera2 (from apt on the Pi; imported only here).

One Picamera2 lives as long as the source: opening a camera takes about a second and the
libcamera pipeline does not like being torn down per frame. The ISP makes two streams from
one exposure: `main` (BGR, display size) and `lores` (YUV420, about the model's input size),
so the full frame is never resized on the CPU. A Pi 4's ISP gives lores only as YUV420.
"""

from __future__ import annotations

from typing import Any, Callable

import cv2
import numpy as np

from edgedetect.errors import SourceError
from edgedetect.sources.base import Capture


# Preview configurations deliver full-range YUV (sYCC); OpenCV's YUV->RGB assumes video
# range (BT.601, Y 16..235), so full-range input comes out over-bright. Squeeze first.
_Y_TO_VIDEO_RANGE = np.round(np.arange(256) * 219 / 255 + 16).astype(np.uint8)
_C_TO_VIDEO_RANGE = np.round((np.arange(256) - 128) * 224 / 255 + 128).astype(np.uint8)


def yuv420_full_range_to_rgb(yuv: np.ndarray) -> np.ndarray:
    """Planar YUV420 (rows: H of Y, then H/2 of U and V) in full range to RGB."""
    h = yuv.shape[0] * 2 // 3
    video = np.empty_like(yuv)
    cv2.LUT(yuv[:h], _Y_TO_VIDEO_RANGE, dst=video[:h])
    cv2.LUT(yuv[h:], _C_TO_VIDEO_RANGE, dst=video[h:])
    return cv2.cvtColor(video, cv2.COLOR_YUV420p2RGB)


def lores_size_for(model_size: tuple[int, int]) -> tuple[int, int]:
    """Lores dimensions for a model input: width a multiple of 64 so rows carry no padding,
    height even for 4:2:0 chroma."""
    w, h = model_size
    return (max(64, -(-w // 64) * 64), max(2, -(-h // 2) * 2))


def _default_factory() -> Any:
    try:
        from picamera2 import Picamera2
    except ImportError:
        raise SourceError(
            "picam: picamera2 is not importable; on Raspberry Pi OS install python3-picamera2 (apt) "
            "and create the venv with --system-site-packages"
        ) from None
    try:
        return Picamera2()
    except (IndexError, RuntimeError) as e:
        raise SourceError(f"picam: no camera found by libcamera ({e})") from None


class PiCamera:
    live = True
    name = "picam"

    def __init__(self, width: int = 1280, height: int = 720, fps: float = 30.0,
                 lores: tuple[int, int] | None = (320, 300),
                 camera_factory: Callable[[], Any] = _default_factory):
        self.size = (width, height)
        self.req_fps = fps
        self.lores = lores
        self._factory = camera_factory
        self.camera: Any = None  # the Picamera2 object, shared with the preview overlay

    @property
    def fps(self) -> float | None:
        return self.req_fps

    def open(self) -> None:
        cam = self._factory()
        streams: dict[str, Any] = {"main": {"size": self.size, "format": "RGB888"}}
        if self.lores:
            streams["lores"] = {"size": self.lores, "format": "YUV420"}
        try:
            # "RGB888" in libcamera's naming is B,G,R in memory: exactly OpenCV's order.
            config = cam.create_preview_configuration(
                **streams, buffer_count=4, controls={"FrameRate": float(self.req_fps)}
            )
            cam.configure(config)
            cam.start()
        except Exception as e:  # picamera2 raises plain RuntimeError/ValueError variants
            cam.close()
            raise SourceError(f"picam: cannot start camera at {self.size[0]}x{self.size[1]} ({e})") from None
        self.camera = cam

    def read(self) -> Capture | None:
        if self.camera is None:
            raise SourceError("picam: camera not open")
        try:
            request = self.camera.capture_request()
        except Exception as e:
            raise SourceError(f"picam: capture failed ({e})") from None
        try:
            main = np.ascontiguousarray(request.make_array("main")[:, :, :3])
            lores = None
            if self.lores:
                lores = yuv420_full_range_to_rgb(request.make_array("lores"))
        finally:
            request.release()  # return the buffer to libcamera at once, or capture stalls
        return Capture(main, lores)

    def close(self) -> None:
        cam, self.camera = self.camera, None
        if cam is not None:
            try:
                cam.stop()
            finally:
                cam.close()
