"""A stand-in for picamera2's Picamera2 that keeps the contract of the real library, as read in
raspberrypi/picamera2 (picamera2.py, job.py, previews/null_preview.py; v0.3.20 and later):

- Picamera2() registers the object with the process-wide camera manager (one entry per camera,
  overwritten by each new object) and then acquires the camera. Acquiring a camera that another
  object holds fails with RuntimeError("Camera __init__ sequence did not complete."), and the
  failed object's notify pipe (its write end) is never closed. An object made successfully is
  kept alive by atexit.register(self.close) until close().
- start() starts the camera and, the first time, the event loop thread (the null preview) that
  turns completed requests into results. stop() keeps that thread; close() ends it.
- capture_request(wait=None) queues a job for the event loop and blocks until a frame completes
  it; wait=<seconds> raises TimeoutError instead, but the job stays queued: when frames come back
  it takes a request that nobody will release, and that buffer is gone.
- cancel_all_and_flush() fails every queued job with CancelledError: a thread blocked in a
  capture returns at once.
- stop() with the event loop running is itself a job, queued behind the others: with a capture
  pending and no frames coming it never returns. close() ends the event loop first and then
  stops directly, so it returns, but leaves a blocked capture blocked for ever.
- A frame needs a free buffer (buffer_count per configuration; queue=True keeps the newest
  completed request, and its buffer, for the next capture).
- Frames reach only the object the camera manager has registered for the camera.
- start() runs the null preview (the event loop) unless one runs; start_preview(kind) refuses
  while an event loop runs ("An event loop is already running"), stop_preview() refuses when
  none does ("No preview specified."); stop_preview()/start_preview() swap the loop, and
  set_overlay() needs a preview ("No preview specified.").

Encoding (picamera2/encoders/encoder.py, h264_encoder.py, v4l2_encoder.py; outputs/output.py):

- start_encoder(encoder, output, name) fills in the encoder's size, format and stride from the
  named stream of the camera configuration, sets the output (which must be an Output), and
  starts it: the encoder starts its outputs, then its own thread. It keeps running across the
  camera's stop() and start(); close() does not stop it, stop_encoder() does (and stops the outputs).
- The event loop hands every completed request to each running encoder (encode(name, request));
  the encoder holds the request (its buffer) until its thread has taken the picture in, and calls
  output.outputframe(bytes, keyframe, timestamp_us) from that thread. timestamp_us is the
  sensor time since the first frame this start of the encoder saw.
- H264Encoder(bitrate, repeat, iperiod, ...): here the pictures are really encoded, by PyAV's
  libx264 (Annex B, SPS/PPS before every keyframe when repeat is set, a keyframe every iperiod
  frames, no frame delay), so what an output gets decodes like the Pi's hardware encoder's.

Faults are set on the Rig, the camera hardware shared by the objects of one test:
`rig.frontend_timeout(cleared_by)` stops frames until the same object is stopped and started
("restart"), a new object acquires the camera ("reopen"), or never ("never").
"""

from __future__ import annotations

import os
import queue
import threading
import time
import types
import weakref
from concurrent.futures import CancelledError, Future
from fractions import Fraction

import av
import numpy as np

INIT_FAILED = "Camera __init__ sequence did not complete."


class Rig:
    def __init__(self, fps: float = 100.0):
        self.period = 1.0 / fps
        self.lock = threading.Lock()
        self.holder: FakePicamera2 | None = None  # libcamera: one acquire at a time
        self.registered: FakePicamera2 | None = None  # picamera2's CameraManager.cameras[0]
        self.atexit: list = []  # bound close methods, as atexit.register keeps them
        self.fault: str | None = None
        self.events: list[tuple[str, int]] = []
        self.made = 0
        self.leaked_fds: list[int] = []
        self.live: weakref.WeakSet[FakePicamera2] = weakref.WeakSet()
        self.torn_down = threading.Event()
        self.blocked_stops = 0
        self.lost_buffers = 0  # requests completed for jobs nobody waited for any more
        self.unreleased = 0  # buffers still out when their camera closed
        self.dropped = 0  # frames the sensor made with no free buffer
        self.frames = 0
        self.encoders: list[H264Encoder] = []  # every encoder started, in order

    def log(self, event: str, serial: int) -> None:
        with self.lock:
            self.events.append((event, serial))

    def names(self) -> list[str]:
        return [f"{e}#{n}" for e, n in self.events]

    def factory(self) -> FakePicamera2:
        return FakePicamera2(self)

    def frontend_timeout(self, cleared_by: str = "restart") -> None:
        assert cleared_by in ("restart", "reopen", "never")
        self.fault = cleared_by
        self.log(f"fault:{cleared_by}", 0)

    def delivering(self, cam: FakePicamera2) -> bool:
        return self.fault is None and self.holder is cam and self.registered is cam and cam.started

    def teardown(self) -> None:
        """Release whatever a wrong caller left blocked, and close leaked descriptors."""
        self.torn_down.set()
        for fd in self.leaked_fds:
            os.close(fd)
        self.leaked_fds.clear()


class FakeRequest:
    def __init__(self, cam: FakePicamera2, index: int):
        self.cam = cam
        self.index = index
        self.sensor_ns = time.monotonic_ns()  # metadata["SensorTimestamp"]
        self._released = False
        self._users = 1  # picamera2's CompletedRequest ref count: acquire() adds one, release() drops one
        self._users_lock = threading.Lock()

    def acquire(self) -> None:
        with self._users_lock:
            assert self._users > 0, "request acquired after its buffer went back"
            self._users += 1

    def make_array(self, stream: str) -> np.ndarray:
        cfg = self.cam.camera_config[stream]
        w, h = cfg["size"]
        if stream == "main":
            img = np.zeros((h, w, 4), np.uint8)
            img[:, :, 1] = self.index % 256
            return img
        return np.full((h * 3 // 2, w), 128, np.uint8)

    def release(self) -> None:
        with self._users_lock:
            assert not self._released, "request released twice"
            self._users -= 1
            if self._users:
                return
            self._released = True
        self.cam._return_buffer()


class _Job:
    def __init__(self, kind: str):
        self.kind = kind
        self.future: Future = Future()
        self.timed_out = False


class FakePicamera2:
    def __init__(self, rig: Rig):
        self.rig = rig
        with rig.lock:
            rig.made += 1
            self.serial = rig.made
        self.notifyme_r, self.notifyme_w = os.pipe()
        self.is_open = False
        self.started = False
        self.camera_config: dict = {}
        self.lock = threading.Lock()  # picamera2's self.lock: the job list and completed requests
        self._jobs: list[_Job] = []
        self._completed: list[FakeRequest] = []
        self._in_use = 0  # buffers not free: completed, handed out, or lost to stale jobs
        self._loop: threading.Thread | None = None
        self._loop_stop = threading.Event()
        self.preview: object = None  # what runs the event loop: False (null preview), or the kind asked for
        self.overlays: list = []  # every set_overlay() argument, in order
        self._encoders: set[H264Encoder] = set()
        rig.registered = self  # CameraManager.add(): the newest object for the camera wins
        with rig.lock:
            busy = rig.holder is not None
            if not busy:
                rig.holder = self
        if busy:
            os.close(self.notifyme_r)  # its file object is closed when collected; the write end is not
            rig.leaked_fds.append(self.notifyme_w)
            rig.log("busy", self.serial)
            raise RuntimeError(INIT_FAILED)
        self.is_open = True
        rig.atexit.append(self.close)
        rig.live.add(self)
        if rig.fault in ("restart", "reopen"):
            rig.fault = None  # a fresh acquire and configure resets the sensor
        rig.log("open", self.serial)

    # --- configuration --------------------------------------------------------------------

    def create_preview_configuration(self, main=None, lores=None, raw=None, transform=None, colour_space=None,
                                     buffer_count=4, controls=None, display="main", encode="main",
                                     sensor=None, queue=True):
        if not self.is_open:
            raise RuntimeError("Camera not opened")
        return {"main": main or {}, "lores": lores, "buffer_count": buffer_count, "queue": queue,
                "controls": controls or {}}

    def configure(self, config) -> None:
        if self.started:
            raise RuntimeError("Camera must be stopped before configuring")
        self.camera_config = config
        main = config["main"]
        if main:  # libcamera fills in the stride; RGB888 rows are 3 bytes a pixel, unpadded at these sizes
            main.setdefault("format", "RGB888")
            main["stride"] = main["size"][0] * 3

    def camera_configuration(self) -> dict:
        return self.camera_config

    # --- encoders -----------------------------------------------------------------------------

    def start_encoder(self, encoder=None, output=None, pts=None, quality=None, name=None) -> None:
        if encoder is None:
            raise RuntimeError("No encoder specified")
        if output is not None:
            encoder.output = output
        streams = self.camera_configuration()
        if not streams:
            raise RuntimeError("Camera has not been configured")
        name = name or "main"
        if not streams.get(name):
            raise RuntimeError(f"Encode stream {name} was not defined")
        encoder.name = name
        encoder.width, encoder.height = streams[name]["size"]
        encoder.format = streams[name]["format"]
        encoder.stride = streams[name]["stride"]
        if encoder.framerate is None:  # picamera2 takes the sensor's fastest rate, at most 30
            encoder.framerate = min(30.0, float(streams["controls"].get("FrameRate", 30.0)))
        encoder.start(quality=quality)
        with self.lock:
            self._encoders.add(encoder)
        self.rig.encoders.append(encoder)
        self.rig.log("start_encoder", self.serial)

    def stop_encoder(self, encoders=None) -> None:
        with self.lock:
            stopping = set(self._encoders) if encoders is None else (
                {encoders} if isinstance(encoders, H264Encoder) else set(encoders))
        for encoder in stopping:
            encoder.stop()
        with self.lock:
            self._encoders -= stopping
        self.rig.log("stop_encoder", self.serial)

    @property
    def encoders(self) -> set:
        return self._encoders

    # --- running ------------------------------------------------------------------------------

    def start(self, config=None, show_preview=False) -> None:
        if not self.camera_config:
            raise RuntimeError("Camera has not been configured")
        if self._loop is None:
            self.start_preview(show_preview)
        if self.started:
            return
        if self.rig.fault == "restart" and self.rig.holder is self:
            self.rig.fault = None  # the sensor restarted: frames flow again
        self.started = True
        self.rig.log("start", self.serial)

    def _stop_now(self) -> None:
        if not self.started:
            return
        self.started = False
        with self.lock:
            completed, self._completed = self._completed, []
        for r in completed:
            r.release()
        self.rig.log("stop", self.serial)

    def stop(self) -> None:
        if not self.started:
            return
        if self._loop is None:
            self._stop_now()
            return
        job = _Job("stop")
        with self.lock:
            self._jobs.append(job)
        blocked = False
        while True:  # picamera2 waits for ever; the rig's teardown ends a wait that never would
            try:
                job.future.result(0.5)
                return
            except TimeoutError:
                if not blocked:
                    blocked = True
                    self.rig.blocked_stops += 1
                    self.rig.log("stop-blocked", self.serial)
                if self.rig.torn_down.is_set():
                    raise RuntimeError("fake: stop() queued behind a capture that never completes") from None

    def capture_request(self, wait=None, signal_function=None, flush=None):
        job = _Job("capture")
        with self.lock:
            self._jobs.append(job)
        timeout = None if wait is None or wait is True else float(wait)
        try:
            return job.future.result(timeout)  # TimeoutError / CancelledError, as picamera2's Job raises them
        except TimeoutError:
            job.timed_out = True  # but it stays queued
            raise

    def cancel_all_and_flush(self) -> None:
        with self.lock:
            jobs, self._jobs = self._jobs, []
        for job in jobs:
            if not job.future.done():
                job.future.set_exception(CancelledError())

    # --- previews -----------------------------------------------------------------------------

    def start_preview(self, preview=None) -> None:
        if self._loop is not None:
            raise RuntimeError("An event loop is already running")
        self.preview = preview or False
        self.rig.log(f"preview:{self.preview}", self.serial)
        self._loop_stop.clear()
        self._loop = threading.Thread(target=self._event_loop, name=f"fake-picam-loop-{self.serial}", daemon=True)
        self._loop.start()

    def stop_preview(self) -> None:
        if self._loop is None:
            raise RuntimeError("No preview specified.")
        self._loop_stop.set()  # the event loop ends, pending jobs or not
        self._loop.join()
        self._loop = None
        self.preview = None

    def set_overlay(self, overlay) -> None:
        if self._loop is None:
            raise RuntimeError("No preview specified.")
        if overlay is not None and (overlay.ndim != 3 or overlay.shape[2] != 4):
            raise RuntimeError("Overlay must be a 4-channel image")
        self.overlays.append(overlay)

    def close(self) -> None:
        if self.close in self.rig.atexit:
            self.rig.atexit.remove(self.close)
        if self._loop is not None:
            self.stop_preview()
        if not self.is_open:
            return
        self._stop_now()
        self.rig.unreleased += self._in_use  # requests handed out and never released
        with self.rig.lock:
            if self.rig.holder is self:
                self.rig.holder = None
        self.rig.registered = None  # CameraManager.cleanup(0): whoever is registered now
        os.close(self.notifyme_r)
        os.close(self.notifyme_w)
        self.is_open = False
        self.rig.log("close", self.serial)

    # --- the event loop -------------------------------------------------------------------------

    def _return_buffer(self) -> None:
        with self.lock:
            self._in_use -= 1

    def _event_loop(self) -> None:
        n = 0
        while not self._loop_stop.wait(self.rig.period):
            finished: list[tuple[_Job, object]] = []
            new: FakeRequest | None = None
            with self.lock:
                if self.rig.delivering(self):
                    if self._in_use < self.camera_config.get("buffer_count", 4):
                        n += 1
                        self._in_use += 1
                        new = FakeRequest(self, n)
                        self._completed.append(new)
                        self.rig.frames += 1
                    else:
                        self.rig.dropped += 1
                while self._jobs:
                    job = self._jobs[0]
                    if job.kind == "capture":
                        if not self._completed:
                            break
                        finished.append((job, self._completed.pop(0)))
                    else:
                        finished.append((job, None))
                    self._jobs.pop(0)
                keep = 1 if self.camera_config.get("queue", True) else 0
                extra = self._completed[:-keep] if keep else list(self._completed)
                self._completed = self._completed[len(extra):]
                encoders = list(self._encoders)
            if new is not None:
                for encoder in encoders:  # before the loop lets go of the request, as picamera2 does
                    encoder.encode(encoder.name, new)
            for r in extra:
                r.release()
            for job, result in finished:
                if job.kind == "stop":
                    self._stop_now()
                else:
                    if job.timed_out:
                        self.rig.lost_buffers += 1  # completed for a caller that gave up: never released
                job.future.set_result(result)


# --- picamera2.outputs and picamera2.encoders --------------------------------------------------


class Output:
    """picamera2.outputs.Output: what an encoder writes to."""

    def __init__(self, pts=None):
        self.recording = False
        self.ptsoutput = pts
        self.needs_pacing = False
        self.needs_add_stream = False

    def start(self) -> None:
        self.recording = True

    def stop(self) -> None:
        self.recording = False

    def outputframe(self, frame, keyframe=True, timestamp=None, packet=None, audio=False) -> None:
        pass

    def _add_stream(self, encoder_stream, *args, **kwargs) -> None:
        pass


_STOP = object()


class H264Encoder:
    """picamera2.encoders.H264Encoder on a Pi 4 (V4L2Encoder): frames go in from the camera's
    event loop, packets come out on the encoder's own thread."""

    def __init__(self, bitrate=None, repeat=True, iperiod=None, framerate=None, enable_sps_framerate=False,
                 qp=None, profile=None):
        self.bitrate = bitrate
        self.repeat = repeat
        self.iperiod = iperiod
        self.framerate = framerate
        self.qp = qp
        self.profile = profile
        self.width = self.height = self.stride = 0
        self.format = None
        self.name = None
        self._output: list[Output] = []
        self._running = False
        self._lock = threading.Lock()  # Encoder._lock: encode() and stop() never overlap
        self.firsttimestamp = None
        self.frames_encoded = 0
        self.thread: threading.Thread | None = None
        self._frames: queue.Queue = queue.Queue()
        self.encoded_on: set[str] = set()  # the threads that ran libx264 (the V4L2 thread on a Pi)

    @property
    def running(self) -> bool:
        return self._running

    @property
    def output(self):
        return self._output[0] if len(self._output) == 1 else self._output

    @output.setter
    def output(self, value) -> None:
        value = value if isinstance(value, list) else [value]
        if not all(isinstance(out, Output) for out in value):
            raise RuntimeError("Must pass Output")
        self._output = value

    def start(self, quality=None) -> None:
        with self._lock:
            if self._running:
                raise RuntimeError("Encoder already running")
            if self.bitrate is None and self.qp is None:  # Quality.MEDIUM: 6 Mbit/s at 1080p30, scaled
                self.bitrate = int(6e6 * self.width * self.height * (self.framerate or 30) / (1920 * 1080 * 30))
            self.frames_encoded = 0
            self._running = True
            self.firsttimestamp = None
            for out in self._output:
                out.start()
            self._frames = queue.Queue()
            self.thread = threading.Thread(target=self._encode_loop, args=(self._open_codec(), self._frames),
                                           name="fake-h264-encoder", daemon=True)
            self.thread.start()

    def _open_codec(self) -> av.VideoCodecContext:
        ctx = av.CodecContext.create("libx264", "w")
        ctx.width, ctx.height, ctx.pix_fmt = self.width, self.height, "yuv420p"
        ctx.time_base = Fraction(1, 1_000_000)
        ctx.framerate = Fraction(round(self.framerate or 30))
        if self.bitrate:
            ctx.bit_rate = int(self.bitrate)
        keyint = self.iperiod or 60
        params = [f"keyint={keyint}", f"min-keyint={keyint}", "scenecut=0", "annexb=1"]
        if self.repeat:
            params.append("repeat-headers=1")
        ctx.options = {"preset": "ultrafast", "tune": "zerolatency", "x264-params": ":".join(params)}
        ctx.open()
        return ctx

    def encode(self, stream, request) -> None:
        with self._lock:
            if not self._running:
                return
            ts = request.sensor_ns // 1000
            if self.firsttimestamp is None:
                self.firsttimestamp = ts
            request.acquire()  # the buffer stays the encoder's until its thread took the picture in
            self._frames.put((request, ts - self.firsttimestamp))
            self.frames_encoded += 1

    def _encode_loop(self, ctx: av.VideoCodecContext, frames: queue.Queue) -> None:
        while (item := frames.get()) is not _STOP:
            request, timestamp_us = item
            try:
                picture = av.VideoFrame.from_ndarray(
                    np.ascontiguousarray(request.make_array(self.name)[:, :, :3]), format="bgr24")
            finally:
                request.release()
            picture = picture.reformat(format="yuv420p")
            picture.pts = timestamp_us
            self.encoded_on.add(threading.current_thread().name)
            self._write(ctx.encode(picture))
        self._write(ctx.encode(None))

    def _write(self, packets) -> None:
        for packet in packets:
            self.outputframe(bytes(packet), packet.is_keyframe, packet.pts)

    def outputframe(self, frame, keyframe=True, timestamp=None, packet=None, audio=False) -> None:
        for out in self._output:
            out.outputframe(frame, keyframe, timestamp, packet, audio)

    def stop(self) -> None:
        with self._lock:
            if not self._running:
                raise RuntimeError("Encoder already stopped")
            self._running = False
            self._frames.put(_STOP)
            self.thread.join()
            for out in self._output:
                out.stop()


def modules(rig: Rig) -> dict[str, types.ModuleType]:
    """The picamera2 modules the source imports, for sys.modules: the camera is the rig's."""
    top = types.ModuleType("picamera2")
    top.Picamera2 = rig.factory
    encoders = types.ModuleType("picamera2.encoders")
    encoders.H264Encoder = H264Encoder
    outputs = types.ModuleType("picamera2.outputs")
    outputs.Output = Output
    top.encoders, top.outputs = encoders, outputs
    return {"picamera2": top, "picamera2.encoders": encoders, "picamera2.outputs": outputs}
