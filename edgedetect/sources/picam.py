"""The Raspberry Pi camera through picamera2 (from apt on the Pi; imported only here).

One Picamera2 lives as long as the source: opening a camera takes about a second and the
libcamera pipeline does not like being torn down per frame. The ISP makes two streams from
one exposure: `main` (BGR, display size) and `lores` (YUV420, about the model's input size),
so the full frame is never resized on the CPU. A Pi 4's ISP gives lores only as YUV420.

When the camera stops delivering ("Camera frontend has timed out", usually power, the ribbon
cable or CPU load), recovery stays in the process and follows picamera2's own contract
(picamera2 >= 0.3.20: `capture_request(wait=seconds)` raises TimeoutError, and
`cancel_all_and_flush()` fails every queued capture with CancelledError):

1. a capture that gets no frame within `capture_timeout` raises TimeoutError; the capture job it
   leaves queued is cancelled, or it would take the next frame's buffer and never give it back;
2. the same Picamera2 object is stopped and started (a restart, reported as "restart");
3. if that brings no frame either, read() raises SourceError and the capture thread closes this
   camera and opens a new Picamera2 (re-creating the object is the last resort: picamera2 #958,
   #887 leak on it, and a new object may only be made once the old one is closed, since
   picamera2's camera manager keeps one object per camera);
4. another thread giving up on a capture (the pipeline's stall check, shutdown) calls
   interrupt(): the blocked capture returns at once with CancelledError, so the thread can close
   its camera and does not keep it busy. Without that cancel, a stop() from any thread queues
   behind the hung capture for ever.
"""

from __future__ import annotations

import logging
from concurrent.futures import CancelledError
from typing import Any, Callable

import cv2
import numpy as np

from edgedetect.errors import SourceError
from edgedetect.sources.base import Capture

log = logging.getLogger("edgedetect.sources.picam")

# Buffers per stream (each buffer holds one main and one lores image, in CMA memory). Every one
# is allocated from the contiguous CMA pool, which the camera shares with the GPU: at 1280x720
# RGB888 a buffer is 2.8 MB, and picamera2's "Cannot allocate memory" failures (#972: fixed by
# lowering buffer_count; #1125: CMA running out) come from asking for more than the pool has.
# Three is the fewest that keep capture smooth: one being filled by the ISP, one queued behind
# it so the ISP never waits for us, and one in our hands while read() copies it out (released at
# once). queue=False stops picamera2 from holding a fourth as "the latest frame" for us; read()
# runs in a loop, so it waits at most one frame period for the next one instead.
BUFFER_COUNT = 3
MIN_CAPTURE_TIMEOUT_S = 2.0  # a healthy camera delivers many frames in this time

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


def lores_size_for(model_size: tuple[int, int], frame_size: tuple[int, int] | None = None) -> tuple[int, int]:
    """Lores dimensions for a model input: width a multiple of 64 so rows carry no padding,
    height even for 4:2:0 chroma. With `frame_size` (a letterboxing model), the frame's aspect is
    kept, fitted inside the model's input, so that the ISP does not squash the picture before
    the letterbox pads it; the ISP scales the whole field of view into lores either way, so
    boxes map back to the main stream exactly."""
    w, h = model_size
    if frame_size is not None:
        fw, fh = frame_size
        s = min(w / fw, h / fh)
        w, h = max(1, round(fw * s)), max(1, round(fh * s))
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
    except IndexError as e:
        raise SourceError(f"picam: no camera found by libcamera ({e})") from None
    except RuntimeError as e:  # no camera, or one another process (or an unclosed object) holds
        raise SourceError(f"picam: cannot open the camera ({e}): is it connected, and not held by "
                          "another program (rpicam-hello, a second edgedetect)?") from None


class PiCamera:
    live = True
    name = "picam"

    def __init__(self, width: int = 1280, height: int = 720, fps: float = 30.0,
                 lores: tuple[int, int] | None = (320, 300),
                 camera_factory: Callable[[], Any] = _default_factory,
                 capture_timeout: float | None = None):
        self.size = (width, height)
        self.req_fps = fps
        self.lores = lores
        self._factory = camera_factory
        # Seconds without a frame before the capture counts as failed: at least 3 frame periods.
        self.capture_timeout = capture_timeout or max(MIN_CAPTURE_TIMEOUT_S, 3.0 / fps)
        self.camera: Any = None  # the Picamera2 object, shared with the preview overlay
        self.on_restart: Callable[[str], None] | None = None  # told "restart" after a stop/start
        self._interrupted = False

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
                **streams, buffer_count=BUFFER_COUNT, queue=False, controls={"FrameRate": float(self.req_fps)}
            )
            cam.configure(config)
            cam.start()
        except Exception as e:  # picamera2 raises plain RuntimeError/ValueError variants
            cam.close()
            raise SourceError(f"picam: cannot start camera at {self.size[0]}x{self.size[1]} ({e})") from None
        self.camera = cam

    def _describe(self, e: BaseException) -> str:
        if isinstance(e, TimeoutError):
            return (f"no frame for {self.capture_timeout:.3g} s (camera frontend timed out? "
                    "check the power supply and the ribbon cable)")
        return f"capture failed ({type(e).__name__}: {e})"

    def _capture(self, cam: Any) -> Any:
        if self._interrupted:
            raise SourceError("picam: capture cancelled")
        try:
            return cam.capture_request(wait=self.capture_timeout)
        except CancelledError:
            raise SourceError("picam: capture cancelled") from None

    @staticmethod
    def _cancel(cam: Any) -> None:
        cancel = getattr(cam, "cancel_all_and_flush", None)  # picamera2 >= 0.3.20
        if cancel is not None:
            cancel()

    def _restart(self, cam: Any, reason: BaseException) -> None:
        """Stop and start the same Picamera2: the cheap cure, tried before a new object."""
        log.warning("picam: %s; restarting the camera", self._describe(reason))
        self._cancel(cam)  # the timed-out capture is still queued; stop() would wait behind it
        try:
            cam.stop()
            cam.start()
        except Exception as e:  # noqa: BLE001 - picamera2/libcamera raise RuntimeError variants
            raise SourceError(f"picam: restarting the camera failed ({type(e).__name__}: {e}); reopening it") from None
        if self.on_restart is not None:
            self.on_restart("restart")

    def read(self) -> Capture | None:
        cam = self.camera
        if cam is None:
            raise SourceError("picam: camera not open")
        try:
            request = self._capture(cam)
        except SourceError:
            raise
        except Exception as e:  # TimeoutError after capture_timeout, or a failed capture job
            if self._interrupted:
                raise SourceError("picam: capture cancelled") from None
            self._restart(cam, e)
            try:
                request = self._capture(cam)
            except SourceError:
                raise
            except Exception as e2:
                self._cancel(cam)
                raise SourceError(f"picam: {self._describe(e2)} after restarting the camera; reopening it") from None
        try:
            main = np.ascontiguousarray(request.make_array("main")[:, :, :3])
            lores = None
            if self.lores:
                lores = yuv420_full_range_to_rgb(request.make_array("lores"))
        finally:
            request.release()  # return the buffer to libcamera at once, or capture stalls
        return Capture(main, lores)

    def interrupt(self) -> None:
        """From another thread: make a capture blocked in read() return now (SourceError), so
        that its thread closes the camera instead of holding it."""
        self._interrupted = True
        cam = self.camera
        if cam is not None:
            self._cancel(cam)

    def close(self) -> None:
        cam, self.camera = self.camera, None
        if cam is None:
            return
        try:
            self._cancel(cam)  # a capture job left queued would hold stop() up for ever
            cam.stop()
        except Exception as e:  # noqa: BLE001 - close it whatever stop() says
            log.warning("picam: stopping the camera failed (%s: %s)", type(e).__name__, e)
        try:
            cam.close()
        except Exception as e:  # noqa: BLE001 - a failed release must not end the capture thread
            log.warning("picam: closing the camera failed (%s: %s)", type(e).__name__, e)
