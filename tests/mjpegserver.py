"""An MJPEG-over-HTTP camera played by the test: serves vtest.avi's frames at 10 fps, and can
be switched off (connections cut, port closed) and on again, or made to hang mid-stream.

It can also misbehave as real cameras do: send a corrupt part now and then (`corrupt_every`),
a part whose Content-Length is wrong (`bad_length_every`), or change its resolution while it
streams (set `size`)."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from pathlib import Path

import cv2
import numpy as np


class MjpegCamera:
    def __init__(self, video: Path, fps: float = 10.0, frames: int = 200, corrupt_every: int = 0,
                 bad_length_every: int = 0, size: tuple[int, int] | None = None,
                 tls: ssl.SSLContext | None = None):
        cap = cv2.VideoCapture(str(video))
        self.images: list[np.ndarray] = []
        while len(self.images) < frames:
            ok, img = cap.read()
            if not ok:
                break
            self.images.append(img)
        cap.release()
        self.jpegs: list[bytes] = [_jpeg(img) for img in self.images]
        self.period = 1.0 / fps
        self.port = _free_port()
        self.hang = threading.Event()  # when set, connections stay open but send nothing
        # Faults: every Nth part (1-based) is corrupt (alternately cut short and random bytes,
        # each with a Content-Length that matches what is sent), or carries a Content-Length
        # that is wrong (alternately too long and too short) around a good JPEG.
        self.corrupt_every = corrupt_every
        self.bad_length_every = bad_length_every
        self.size = size  # None: the clip's own size; (w, h): frames re-encoded at that size
        self.tls = tls  # serve https with this server context
        self.sent = self.sent_corrupt = self.sent_bad_length = 0
        self.connections = 0  # accepted so far: a client that reconnects shows here
        self._resized: dict[tuple[int, tuple[int, int]], bytes] = {}
        self._stop = threading.Event()
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/video.mjpg"

    def frame(self, i: int, size: tuple[int, int] | None = None) -> bytes:
        """Part i's JPEG at `size` (the same bytes the camera sends)."""
        i %= len(self.jpegs)
        if size is None:
            return self.jpegs[i]
        key = (i, size)
        if key not in self._resized:
            self._resized[key] = _jpeg(cv2.resize(self.images[i], size, interpolation=cv2.INTER_AREA))
        return self._resized[key]

    def start(self) -> MjpegCamera:
        self._stop.clear()
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", self.port))
        ls.listen(8)
        ls.settimeout(0.2)
        self._listener = ls
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self._threads = [t]
        return self

    def stop(self) -> None:
        """The camera goes away: port closed, every connection cut."""
        self._stop.set()
        for t in self._threads:
            t.join(2)
        with self._lock:
            for c in self._conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                c.close()
            self._conns.clear()
        if self._listener:
            self._listener.close()
            self._listener = None

    def _accept(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._conns.append(conn)
                self.connections += 1
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            t.start()

    def _part(self, i: int) -> bytes:
        n = i + 1
        jpg = self.frame(i, self.size)
        length = len(jpg)
        if self.corrupt_every and n % self.corrupt_every == 0:
            self.sent_corrupt += 1
            if self.sent_corrupt % 2:
                jpg = jpg[: len(jpg) // 3]  # cut short: the camera's encoder or Wi-Fi dropped the rest
            else:
                jpg = np.random.default_rng(n).integers(0, 256, len(jpg), np.uint8).tobytes()
            length = len(jpg)
        elif self.bad_length_every and n % self.bad_length_every == 0:
            self.sent_bad_length += 1
            length += 700 if self.sent_bad_length % 2 else -700
        return (b"--camframe\r\nContent-Type: image/jpeg\r\nContent-Length: " + str(length).encode()
                + b"\r\n\r\n" + jpg + b"\r\n")

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(5)
            if self.tls is not None:
                raw, conn = conn, self.tls.wrap_socket(conn, server_side=True)
                with self._lock:  # stop() cuts the TLS socket now
                    self._conns = [conn if c is raw else c for c in self._conns]
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                data += chunk
            conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=camframe\r\n\r\n")
            i = 0
            while not self._stop.is_set():
                if self.hang.is_set():
                    time.sleep(0.05)
                    continue
                conn.sendall(self._part(i))
                self.sent += 1
                i += 1
                time.sleep(self.period)
        except OSError:
            pass
        finally:
            with self._lock:
                if conn in self._conns:
                    self._conns.remove(conn)
            conn.close()


def _jpeg(img: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 70])[1].tobytes()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
