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

Faults are set on the Rig, the camera hardware shared by the objects of one test:
`rig.frontend_timeout(cleared_by)` stops frames until the same object is stopped and started
("restart"), a new object acquires the camera ("reopen"), or never ("never").
"""

from __future__ import annotations

import os
import threading
import weakref
from concurrent.futures import CancelledError, Future

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
        self._released = False

    def make_array(self, stream: str) -> np.ndarray:
        cfg = self.cam.camera_config[stream]
        w, h = cfg["size"]
        if stream == "main":
            img = np.zeros((h, w, 4), np.uint8)
            img[:, :, 1] = self.index % 256
            return img
        return np.full((h * 3 // 2, w), 128, np.uint8)

    def release(self) -> None:
        assert not self._released, "request released twice"
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
            with self.lock:
                if self.rig.delivering(self):
                    if self._in_use < self.camera_config.get("buffer_count", 4):
                        n += 1
                        self._in_use += 1
                        self._completed.append(FakeRequest(self, n))
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
            for r in extra:
                r.release()
            for job, result in finished:
                if job.kind == "stop":
                    self._stop_now()
                else:
                    if job.timed_out:
                        self.rig.lost_buffers += 1  # completed for a caller that gave up: never released
                job.future.set_result(result)
