"""The publishing stage: holds the newest result and serves it to the sinks.

The annotated JPEG is made lazily, at most once per published result, by the first viewer
that asks for it; with no viewer nothing is drawn or encoded at all.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable, Iterator

import cv2

from edgedetect import clock
from edgedetect.pipeline.annotate import annotated, no_signal
from edgedetect.frames import Frame, Result
from edgedetect.pipeline.listeners import Listeners
from edgedetect.pipeline.stats import CameraStats

log = logging.getLogger("edgedetect.pipeline.publish")

Listener = Callable[[Result], None]


class Publisher:
    def __init__(self, stats: CameraStats, jpeg_quality: int = 80, banner: Callable[[], str] = lambda: ""):
        self._stats = stats
        self._quality = [int(cv2.IMWRITE_JPEG_QUALITY), int(jpeg_quality)]
        self._banner = banner
        self._cond = threading.Condition()
        self._result: Result | None = None
        self._seq = 0
        self._jpeg_lock = threading.Lock()
        self._jpeg_seq = -1
        self._jpeg = b""
        self.encoded = 0  # JPEGs made; one per published result at most, however many viewers
        self.placeholder = False  # the newest "frame" is a no-signal card, not a camera frame
        self._listeners: Listeners[Result] = Listeners("result listener")
        self._closed = False

    def add_listener(self, fn: Listener) -> None:
        """Called in the inference thread with every result; must return quickly."""
        self._listeners.add(fn)

    @property
    def listener_errors(self) -> int:
        return self._listeners.errors

    def publish(self, result: Result) -> None:
        with self._cond:
            self._result = result
            self._seq += 1
            self.placeholder = False
            self._cond.notify_all()
        self._stats.published_frame(clock.now(), result.frame.t_capture)
        self._listeners(result)

    def publish_placeholder(self, text: str, size: tuple[int, int] | None = None) -> None:
        """Show a card (\"no signal\") to viewers while the source is away."""
        with self._cond:
            if self._result is not None and size is None:
                h, w = self._result.frame.image.shape[:2]
                size = (w, h)
            w, h = size or (640, 360)
            self._result = Result(Frame(-1, clock.now(), no_signal(w, h, text)))
            self._seq += 1
            self.placeholder = True
            self._cond.notify_all()

    def latest(self) -> tuple[int, Result | None]:
        with self._cond:
            return self._seq, self._result

    def wait_newer(self, seq: int, timeout: float) -> tuple[int, Result | None]:
        """The newest result once its sequence number is past `seq` (or the current one on timeout)."""
        with self._cond:
            if self._seq <= seq and not self._closed:
                self._cond.wait_for(lambda: self._seq > seq or self._closed, timeout)
            return self._seq, self._result

    def jpeg(self) -> tuple[int, bytes]:
        """The newest result annotated and JPEG-encoded; (0, b"") before the first result."""
        with self._jpeg_lock:
            # Which result is newest is read under the lock: a viewer that waited for it while
            # another encoded a newer one gets that one, and no older result is encoded again.
            seq, result = self.latest()
            if result is None:
                return 0, b""
            if self._jpeg_seq != seq:
                img = result.frame.image
                if result.frame.index >= 0:  # not a placeholder card
                    img = annotated(result, self._banner())
                ok, buf = cv2.imencode(".jpg", img, self._quality)
                if ok:
                    self._jpeg, self._jpeg_seq = buf.tobytes(), seq
                    self.encoded += 1
            return self._jpeg_seq, self._jpeg

    def stream(self, stop: threading.Event, poll_s: float = 0.5) -> Iterator[bytes]:
        """JPEGs as one viewer receives them: each of a newer result than the last, the results
        that came while the viewer was busy skipped (for this viewer only)."""
        seq = 0
        while not stop.is_set():
            new_seq, result = self.wait_newer(seq, timeout=poll_s)
            if result is None or new_seq == seq:
                continue
            seq, jpg = self.jpeg()
            if jpg:
                yield jpg

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
