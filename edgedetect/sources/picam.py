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

With `record`, clips come from the Pi 4's hardware H.264 encoder (the VideoCore's, reached
through V4L2 by picamera2's H264Encoder) fed the main stream, so no pixel is encoded on the
CPU: libx264 superfast at 1280x720 took 7.4 ms of CPU a frame on an x86 core, 22 % of it at
30 fps, and a Pi 4's Cortex-A72 is slower (docs/picamera.md). The encoder runs on the camera's
frames from its own thread; its packets wait in a PacketBuffer until read() hands them out on
the next Capture. The encoder is started before the camera and stopped after it (picamera2's
start_recording/stop_recording order), on restarts too.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from concurrent.futures import CancelledError
from typing import Any, Callable

import cv2
import numpy as np

from edgedetect import clock
from edgedetect.errors import SourceError
from edgedetect.frames import EncodedPacket
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
# The V4L2 encoder keeps a request (its main buffer) until it has taken the picture in, so
# recording needs one buffer more for the ISP never to wait.
RECORD_BUFFER_COUNT = BUFFER_COUNT + 1
KEYFRAME_PERIOD_S = 1.0  # a clip can start at any keyframe: its pre-roll is at most this much longer
# Unread packets kept: the capture thread drains them every frame, so this is only reached
# when it stops reading for seconds; 4 s at 3 Mbit/s is 1.5 MB.
PACKET_BUFFER_S = 4.0
MIN_PACKET_BUFFER_BYTES = 1 << 20

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


class PacketBuffer:
    """The encoder's packets, put by its thread, until read() drains them. Bounded in bytes:
    past `cap_bytes` the oldest go, up to the next keyframe, since a packet that follows a
    dropped one does not decode; with nothing left, packets are dropped until a keyframe.

    The encoder stamps packets in microseconds since its first frame (the sensor's clock).
    `t` maps that onto clock.now() by the smallest arrival-minus-timestamp seen since the
    encoder started: the encoder's latency only ever adds to that difference, so its minimum is
    the best estimate of when the stream began, and packet times never go backwards."""

    def __init__(self, width: int, height: int, cap_bytes: int):
        self.width, self.height = width, height
        self.cap_bytes = cap_bytes
        self._lock = threading.Lock()
        self._packets: deque[EncodedPacket] = deque()
        self.bytes = 0
        self.dropped = 0  # packets lost to the bound
        self._dropped_drained = 0  # of those, reported by drain()
        self._need_key = True
        self._overflowing = False  # warned about since the last drain
        self._origin: float | None = None  # clock.now() of encoder timestamp 0

    def restart_timeline(self) -> None:
        """A started encoder counts its timestamps from zero again, and starts with a keyframe."""
        with self._lock:
            self._origin = None
            self._need_key = True

    def put(self, data: bytes, key: bool, timestamp_us: int | None) -> None:
        arrived = clock.now()
        with self._lock:
            if timestamp_us is None:
                t = arrived
            else:
                ts = timestamp_us / 1e6
                if self._origin is None or arrived - ts < self._origin:
                    self._origin = arrived - ts
                t = self._origin + ts
            if self._need_key and not key:
                self.dropped += 1
                return
            self._need_key = False
            self._packets.append(EncodedPacket(bytes(data), t, key, "h264", self.width, self.height))
            self.bytes += len(data)
            if self.bytes <= self.cap_bytes:
                return
            while self._packets and (self.bytes > self.cap_bytes or not self._packets[0].key):
                self.bytes -= len(self._packets.popleft().data)
                self.dropped += 1
            self._need_key = not self._packets
            if self._overflowing:
                return
            self._overflowing = True
        log.warning("picam: encoded video unread past %d KB; dropping the oldest, up to a keyframe, "
                    "until it is read", self.cap_bytes // 1024)

    def drain(self) -> tuple[tuple[EncodedPacket, ...], int]:
        """The packets put since the last drain, and how many were dropped in that time."""
        with self._lock:
            packets = tuple(self._packets)
            self._packets.clear()
            self.bytes = 0
            self._overflowing = False
            dropped, self._dropped_drained = self.dropped - self._dropped_drained, self.dropped
        return packets, dropped


def _encoder_output(packets: PacketBuffer) -> Any:
    """A picamera2 Output (the encoder accepts nothing else) that puts into `packets`."""
    from picamera2.outputs import Output

    class ToPacketBuffer(Output):
        def start(self) -> None:
            packets.restart_timeline()
            super().start()

        def outputframe(self, frame, keyframe=True, timestamp=None, packet=None, audio=False) -> None:
            if not audio and frame is not None:
                packets.put(frame, keyframe, timestamp)

    return ToPacketBuffer()


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
                 capture_timeout: float | None = None,
                 record: bool = False, record_mbps: float = 3.0, packet_buffer_bytes: int | None = None):
        self.size = (width, height)
        self.req_fps = fps
        self.lores = lores
        self._factory = camera_factory
        # Seconds without a frame before the capture counts as failed: at least 3 frame periods.
        self.capture_timeout = capture_timeout or max(MIN_CAPTURE_TIMEOUT_S, 3.0 / fps)
        self.camera: Any = None  # the Picamera2 object, shared with the preview overlay
        self.on_restart: Callable[[str], None] | None = None  # told "restart" after a stop/start
        self._interrupted = False
        # Clips from the hardware encoder: packets ride on each Capture.
        self.record = record
        self.record_mbps = record_mbps
        self.packet_buffer: PacketBuffer | None = None
        if record:
            cap = packet_buffer_bytes or max(MIN_PACKET_BUFFER_BYTES, int(record_mbps * 1e6 / 8 * PACKET_BUFFER_S))
            self.packet_buffer = PacketBuffer(width, height, cap)
        self._output: Any = None  # the picamera2 Output that fills self.packet_buffer
        self._encoder: Any = None  # the running H264Encoder

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
                **streams, buffer_count=RECORD_BUFFER_COUNT if self.record else BUFFER_COUNT, queue=False,
                controls={"FrameRate": float(self.req_fps)}
            )
            cam.configure(config)
            self._start_encoder(cam)
            cam.start()
        except Exception as e:  # picamera2 raises plain RuntimeError/ValueError variants
            self._stop_encoder(cam)
            cam.close()
            raise SourceError(f"picam: cannot start camera at {self.size[0]}x{self.size[1]} ({e})") from None
        self.camera = cam

    def _start_encoder(self, cam: Any) -> None:
        """The hardware encoder on the main stream, when recording. One that cannot start leaves
        the camera detecting without packets (clips then encode pixels): detection matters more."""
        if self.packet_buffer is None:
            return
        try:
            from picamera2.encoders import H264Encoder

            if self._output is None:
                self._output = _encoder_output(self.packet_buffer)
            encoder = H264Encoder(bitrate=int(self.record_mbps * 1e6), repeat=True,
                                  iperiod=max(1, round(self.req_fps * KEYFRAME_PERIOD_S)), framerate=float(self.req_fps))
            cam.start_encoder(encoder, self._output, name="main")
        except Exception as e:  # noqa: BLE001 - ImportError, or V4L2's OSError/RuntimeError variants
            log.warning("picam: the H.264 encoder did not start (%s: %s); clips will be encoded in software",
                        type(e).__name__, e)
            return
        self._encoder = encoder

    def _stop_encoder(self, cam: Any) -> None:
        encoder, self._encoder = self._encoder, None
        if encoder is None:
            return
        try:
            cam.stop_encoder(encoder)  # joins the encoder's thread
        except Exception as e:  # noqa: BLE001 - the camera is closed or restarted regardless
            log.warning("picam: stopping the H.264 encoder failed (%s: %s)", type(e).__name__, e)

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
            self._stop_encoder(cam)
            self._start_encoder(cam)
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
        if self.packet_buffer is None:
            return Capture(main, lores)
        packets, dropped = self.packet_buffer.drain()
        return Capture(main, lores, packets, dropped)

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
        self._stop_encoder(cam)  # Picamera2.close() leaves encoders running
        try:
            cam.close()
        except Exception as e:  # noqa: BLE001 - a failed release must not end the capture thread
            log.warning("picam: closing the camera failed (%s: %s)", type(e).__name__, e)
